package main

import (
	"bufio"
	"math"
	"os"
	"strconv"
	"strings"
)

// gramSet is the set of n-grams (keys as in ngrams) seen in training.
func gramSet(train [][]int32, n int) map[uint64]bool {
	s := map[uint64]bool{}
	for _, t := range train {
		for k := range ngrams(t, n) {
			s[k] = true
		}
	}
	return s
}

// callIDF is log((N+1)/(df+1))+1 of each call over training traces; calls
// never seen in training get the maximum, log(N+1)+1.
func callIDF(train [][]int32) func(int32) float64 {
	df := map[int32]float64{}
	for _, t := range train {
		seen := map[int32]bool{}
		for _, c := range t {
			if !seen[c] {
				seen[c] = true
				df[c]++
			}
		}
	}
	N := float64(len(train))
	return func(c int32) float64 {
		return math.Log((N+1)/(df[c]+1)) + 1
	}
}

// Call classes from the i386 names: an argument-free abstraction (Creech &
// Hu style semantic grouping, coarse).
const (
	clsOther = iota
	clsFileIO
	clsFileMeta
	clsProc
	clsIdent
	clsSignal
	clsMem
	clsNet
	clsIPC
	clsTime
	clsInfo
	nClasses
)

var classNames = []string{"other", "fileio", "filemeta", "proc", "ident", "signal", "mem", "net", "ipc", "time", "info"}

func classOf(name string) int {
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(name, s) {
				return true
			}
		}
		return false
	}
	switch {
	case name == "socketcall" || has("socket", "sendto", "recv", "connect", "accept", "bind", "listen", "sendmsg"):
		return clsNet
	case has("uid", "gid", "groups", "capget", "capset"):
		return clsIdent
	case has("sig", "alarm", "pause", "kill"):
		return clsSignal
	case has("mmap", "munmap", "mprotect", "mremap", "madvise", "mlock", "munlock", "mincore") || name == "brk":
		return clsMem
	case has("fork", "clone", "execve", "exit", "wait", "getpid", "getppid", "gettid", "setsid", "getsid", "pgid", "pgrp",
		"prctl", "set_tid_address", "thread_area", "robust_list", "personality", "sched_", "rlimit", "getrusage", "nice", "priority", "ptrace", "unshare"):
		return clsProc
	case has("read", "write", "lseek", "sendfile", "splice", "tee") && !has("readlink", "readdir"):
		return clsFileIO
	case has("open", "creat", "close", "stat", "access", "unlink", "rename", "mkdir", "rmdir", "chmod", "chown", "link", "getdents",
		"readdir", "fcntl", "dup", "ioctl", "chdir", "getcwd", "umask", "truncate", "utime", "flock", "sync", "xattr", "mknod", "chroot", "mount", "fadvise"):
		return clsFileMeta
	case has("futex", "ipc", "pipe", "poll", "select", "epoll", "eventfd", "mq_", "inotify"):
		return clsIPC
	case has("time", "clock", "sleep", "times"):
		return clsTime
	case has("uname", "sysinfo", "sysctl", "syslog"):
		return clsInfo
	}
	return clsOther
}

// loadClasses maps i386 numbers to classes.
func loadClasses(path string) (map[int32]int32, map[int32]string) {
	f, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	cls := map[int32]int32{}
	names := map[int32]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ",")
		if len(p) != 2 {
			continue
		}
		n, err := strconv.Atoi(p[0])
		if err != nil {
			continue
		}
		cls[int32(n)] = int32(classOf(p[1]))
		names[int32(n)] = p[1]
	}
	return cls, names
}

func toClasses(ids []int32, cls map[int32]int32) []int32 {
	o := make([]int32, len(ids))
	for i, c := range ids {
		if k, ok := cls[c]; ok {
			o[i] = k
		} else {
			o[i] = clsOther
		}
	}
	return o
}
