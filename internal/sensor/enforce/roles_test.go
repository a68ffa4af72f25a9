package enforce

import (
	"fmt"
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
	name := os.Getenv("NAME")
	held, err := net.Dial("tcp4", os.Getenv("SERVER"))
	if err != nil {
		fmt.Println("held-dial-error", err)
		return 1
	}
	if _, err := fmt.Fprintf(held, "hello %s\n", name); err != nil {
		fmt.Println("held-error", err)
		return 1
	}
	fmt.Println("held-ok")
	go func() {
		buf := make([]byte, 64)
		if _, err := held.Read(buf); err != nil {
			fmt.Println("held-error read:", err)
		}
	}()
	go func() {
		for {
			if _, err := fmt.Fprintf(held, "ping %s\n", name); err != nil {
				fmt.Println("held-error write:", err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	udp, _ := net.ResolveUDPAddr("udp4", os.Getenv("UDP"))
	dns, _ := net.ResolveUDPAddr("udp4", os.Getenv("DNS"))
	uc, err := net.ListenUDP("udp4", nil)
	if err != nil {
		fmt.Println("udp-error", err)
		return 1
	}
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp4", os.Getenv("SERVER"), 200*time.Millisecond)
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
