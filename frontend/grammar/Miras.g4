// Grammar of .miras files: one `module` with items in any order.
//
// Item keywords are reserved; everything a user may extend (component names,
// gate kinds, argument keywords, `read` modes) is a plain identifier, checked by
// Sema against its registry, so new built-ins need no grammar change and get
// "unknown X, expected one of ..." messages instead of parser noise.
// Decisions are LL(1) after the item keyword so syntax errors name what was
// expected at the right token.
grammar Miras;

file      : moduleDecl EOF ;
exprOnly  : expr EOF ;              // entry for built-in bias definitions

moduleDecl : 'module' ID '{' item* '}' ;

item
  : paramDecl | gateDecl | memoryDecl | biasDecl
  | retentionDecl | optimizerDecl | readDecl | chunkDecl | initDecl
  ;

paramDecl     : 'param' ID '=' expr ';' ;
// `gate alpha : scalar in (0, 1];`: the range is written after the identifier
// `in` (not a reserved word: the builder checks its spelling), each end open `(` `)` or
// closed `[` `]`, each bound a constant expression or `inf` / `-inf`.
gateDecl      : 'gate' ID ':' kind=ID ( '(' axis=ID ')' )? ( inWord=ID gateRange )? ';' ;
gateRange     : open=( '(' | '[' ) lo=expr ',' hi=expr close=( ')' | ']' ) ;
memoryDecl    : 'memory' component ';' ;
biasDecl      : 'bias' ( '(' pred=ID ',' target=ID ')' '=' expr | component ) ';' ;
retentionDecl : 'retention' component ';' ;
optimizerDecl : 'optimizer' component ';' ;
readDecl      : 'read' ID ';' ;
chunkDecl     : 'chunk' expr ';' ;
// `init W = uniform;`, `init W1 = normal(0.02, seed = 7);`: how a carried state
// starts when the host passes none. The kind is a plain identifier (Sema checks it).
initDecl      : 'init' state=ID '=' component ';' ;

component : ID ( '(' ( arg ( ',' arg )* )? ')' )? ;
// `name = value`, a positional `value`, or a function argument `map(A) = expr`.
arg       : fn=ID '(' bound=ID ')' '=' value=expr
          | ( name=ID '=' )? value=expr ;

// Precedence, loosest first: comparisons < <= > >= (non-associative: the
// builder rejects a chain with a readable message), + -, * /, unary -, ^
// (right-assoc). The exponent is a `unary` so `2^-1` parses, and `-x^2` is
// `-(x^2)`. Sema allows a comparison only as the condition of where(...).
expr  : sum ( ( '<' | '<=' | '>' | '>=' ) sum )* ;
sum   : term ( ( '+' | '-' ) term )* ;
term  : unary ( ( '*' | '/' ) unary )* ;
unary : '-' unary | power ;
power : atom ( '^' unary )? ;
atom
  : NUMBER
  | ID ( '(' ( expr ( ',' expr )* )? ')' )?
  | '(' expr ')'
  ;

NUMBER : DIGIT+ ( '.' DIGIT* )? EXPONENT? | '.' DIGIT+ EXPONENT? ;
ID     : [a-zA-Z_] [a-zA-Z_0-9]* ;
fragment DIGIT    : [0-9] ;
fragment EXPONENT : [eE] [+-]? DIGIT+ ;

LINE_COMMENT  : '//' ~[\r\n]* -> skip ;
BLOCK_COMMENT : '/*' .*? '*/' -> skip ;
// Kept as a token (hidden) so the driver can say "unterminated comment" instead
// of lexing `/*` as a division and a product.
// No `*/` inside, so a closed comment (BLOCK_COMMENT) never matches this
// longer alternative.
UNTERMINATED_COMMENT : '/*' ( ~'*' | '*'+ ~[*/] )* '*'* EOF -> channel(HIDDEN) ;
WS : [ \t\r\n\f]+ -> skip ;
