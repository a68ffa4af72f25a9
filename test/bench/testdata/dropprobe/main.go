// Command dropprobe is a pod's traffic in the score → packets dropped
// benchmark: it sends a UDP datagram to -udp every -interval and prints the
// wall-clock time (Unix ns) of its first delivered send ("ok <ns>") and of
// its first send the kernel refused ("dropped <ns>": the isolation's
// cgroup_skb egress program dropped it, and sendto(2) returned EPERM), then
// stays (without sending) until it is killed. A refusal is thus timed to
// within one interval.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("udp", "", "UDP address sent a datagram every interval")
	interval := flag.Duration("interval", 5*time.Millisecond, "time between datagrams")
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
		time.Sleep(*interval)
	}
}
