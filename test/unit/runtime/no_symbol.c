/* no_symbol.c: a valid shared library that is not a miras module (no miras_module_v1). */
int not_a_miras_module(void) { return 42; }
