package collect

// The generated collect_bpfel.go and collect_bpfel.o are committed so a build
// needs no clang; `make generate-bpf` regenerates them and `make verify-bpf`
// checks they are current.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -target bpfel -type exec_event -type conn_event -type trigram_key -type trigram_slot -type call_counts -type sock_record collect bpf/collect.bpf.c -- -I../bpf/include
