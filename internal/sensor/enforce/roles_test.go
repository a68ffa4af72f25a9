package enforce

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func runHelper(role string) int {
	switch role {
	case "client":
		return client()
	case "netns-pod":
		return netnsPod()
	case "holder":
		return holder()
	case "isolate", "release":
		return sensor(role)
	}
	fmt.Fprintln(os.Stderr, "unknown helper role", role)
	return 2
}

// client plays the workload of a pod: it holds one TCP connection open and
// keeps opening new ones and sending UDP datagrams, and prints what fails.
func client() int {
	name, family := os.Getenv("NAME"), os.Getenv("FAMILY")
	held, err := net.Dial("tcp"+family, os.Getenv("SERVER"))
	if err != nil {
		fmt.Println("held-dial-error", err)
		return 1
	}
	if _, err := fmt.Fprintf(held, "hello %s\n", name); err != nil {
		fmt.Println("held-error", err)
		return 1
	}
	hold(held)
	go func() {
		for {
			if _, err := fmt.Fprintf(held, "ping %s\n", name); err != nil {
				fmt.Println("held-error write:", err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	udp, _ := net.ResolveUDPAddr("udp"+family, os.Getenv("UDP"))
	dns, _ := net.ResolveUDPAddr("udp"+family, os.Getenv("DNS"))
	uc, err := net.ListenUDP("udp"+family, nil)
	if err != nil {
		fmt.Println("udp-error", err)
		return 1
	}
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp"+family, os.Getenv("SERVER"), 200*time.Millisecond)
		if err != nil {
			fmt.Println("connect-error", err)
		} else {
			fmt.Fprintf(c, "new %s\n", name)
			c.Close()
			fmt.Println("connect-ok")
		}
		if _, err := uc.WriteToUDP([]byte(fmt.Sprintf("%s %d", name, i)), udp); err != nil {
			fmt.Println("udp-error", err)
		}
		if _, err := uc.WriteToUDP([]byte(fmt.Sprintf("%s %d", name, i)), dns); err != nil {
			fmt.Println("dns-error", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sensor isolates or releases CGROUP under PINDIR and SIGKILLs itself at
// step CRASH_AT (or is killed by the test at a random moment).
func sensor(role string) int {
	e, err := New(os.Getenv("PINDIR"))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	crashAt := os.Getenv("CRASH_AT")
	e.crash = func(step string) {
		if step == crashAt {
			_ = unix.Kill(os.Getpid(), unix.SIGKILL)
			select {}
		}
	}
	fmt.Println("ready")
	if role == "isolate" {
		o := Options{AllowDNS: true, DNS: []netip.AddrPort{netip.MustParseAddrPort(os.Getenv("DNS"))}}
		_, err = e.Isolate(os.Getenv("CGROUP"), o)
	} else {
		err = e.Release(os.Getenv("CGROUP"))
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("done")
	return 0
}

// netnsPod plays a pod with its own network namespace: it brings up its
// loopback, serves on it, and holds a connection to itself.
func netnsPod() int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Println("setup-error", err)
		return 1
	}
	ifr, err := unix.NewIfreq("lo")
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr)
	}
	if err == nil {
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		err = unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	}
	unix.Close(fd)
	if err != nil {
		fmt.Println("setup-error lo up:", err)
		return 1
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Println("setup-error", err)
		return 1
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	held, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		fmt.Println("setup-error", err)
		return 1
	}
	hold(held)
	for {
		if _, err := held.Write([]byte("ping\n")); err != nil {
			fmt.Println("held-error write:", err)
			select {}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hold reports the held connection and prints how reading from it fails.
func hold(held net.Conn) {
	fmt.Println("held-ok")
	go func() {
		buf := make([]byte, 64)
		if _, err := held.Read(buf); err != nil {
			fmt.Println("held-error read:", err)
		}
	}()
}
