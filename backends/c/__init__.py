"""The C family: one C emitter (cstyle) in dialects for CUDA (NVRTC), HIP (hiprtc) and the host
simulator (g++), their builds and binary cache."""
