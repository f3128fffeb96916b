"""Microbenchmarks of the primitives (make micro): the C++ benchmarks, micro-run and micro-ratio,
and microresult, the reader of their JSON that plots.micro and paper.macros import."""
