"""Applications built on the library: the end-to-end demo and the zoo benchmark driver."""
