// Command dropprobe is a pod's traffic in the score → packets dropped
// benchmark: it sends one UDP datagram to -udp, then waits for SIGUSR1 (the
// bench sends it just before the score, so 200 probes do not load the host
// while they wait) and sends one every -interval from then on. It prints the
// wall-clock time (Unix ns) of its first delivered send ("ok <ns>") and of
// its first send the kernel refused ("dropped <ns>": the isolation's
// cgroup_skb egress program dropped it, and sendto(2) returned EPERM), then
// stays, without sending, until it is killed. A refusal is thus timed to
// within one interval.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

func main() {
	runtime.GOMAXPROCS(1)
	addr := flag.String("udp", "", "UDP address sent a datagram every interval")
	interval := flag.Duration("interval", 5*time.Millisecond, "time between datagrams after SIGUSR1")
	flag.Parse()
	dst, err := net.ResolveUDPAddr("udp", *addr)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	c, err := net.ListenUDP("udp", nil)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fast := make(chan os.Signal, 1)
	signal.Notify(fast, syscall.SIGUSR1)
	msg := []byte("probe")
	ok := false
	for {
		_, err := c.WriteToUDP(msg, dst)
		now := time.Now().UnixNano()
		switch {
		case err == nil && !ok:
			ok = true
			fmt.Println("ok", now)
		case errors.Is(err, syscall.EPERM):
			fmt.Println("dropped", now)
			select {}
		case err != nil:
			fmt.Println("send-error", now, err)
		}
		if fast != nil {
			<-fast
			signal.Stop(fast)
			fast = nil
		}
		time.Sleep(*interval)
	}
}
