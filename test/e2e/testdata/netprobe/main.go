// Command netprobe is a pod's own network traffic in the e2e: it holds one
// TCP connection open and writes a line on it every tick (reconnecting when
// it breaks), opens a new TCP connection every tick, and sends a UDP
// datagram every tick to each --udp address. The test's listeners count
// what arrives, so a kernel that drops the pod's packets shows as silence.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	hold := flag.String("hold", "", "TCP address of the long-lived connection")
	connect := flag.String("connect", "", "TCP address connected to anew every tick")
	udp := flag.String("udp", "", "comma-separated UDP addresses sent a datagram every tick")
	connectFile := flag.String("connect-file", "", "file naming more TCP addresses (comma-separated) to connect to anew every tick, re-read every tick")
	tick := flag.Duration("tick", 200*time.Millisecond, "interval")
	name := flag.String("name", "", "name sent in every line and datagram, so the listeners count per pod")
	flag.Parse()
	var held net.Conn
	for n := 0; ; n++ {
		if *hold != "" {
			if held == nil {
				held, _ = net.DialTimeout("tcp", *hold, time.Second)
			}
			if held != nil {
				_ = held.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := fmt.Fprintf(held, "hold %s %d\n", *name, n); err != nil {
					_ = held.Close()
					held = nil
				}
			}
		}
		targets := *connect
		if *connectFile != "" {
			if b, err := os.ReadFile(*connectFile); err == nil {
				targets += "," + strings.TrimSpace(string(b))
			}
		}
		for _, a := range strings.Split(targets, ",") {
			if a == "" {
				continue
			}
			if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
				_, _ = fmt.Fprintf(c, "connect %s %d\n", *name, n)
				_ = c.Close()
			}
		}
		for _, a := range strings.Split(*udp, ",") {
			if a == "" {
				continue
			}
			if c, err := net.Dial("udp", a); err == nil {
				_, _ = fmt.Fprintf(c, "udp %s %d\n", *name, n)
				_ = c.Close()
			}
		}
		time.Sleep(*tick)
	}
}
