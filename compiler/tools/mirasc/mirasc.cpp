//===- mirasc.cpp - The miras compiler driver -----------------------------===//
#include "miras/Compiler/Driver.h"

int main(int argc, char **argv) { return miras::runMirasc(argc, argv); }
