"""The compiled program and everything it calls at run time: the program itself, memory plan, view
folding, library outputs, layouts and the launcher contract generated kernels implement."""
