package enforce

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -strip llvm-strip -cflags "-O2 -g -Wall -Werror" -target bpfel -type endpoint enforce bpf/enforce.bpf.c -- -I../bpf/include
