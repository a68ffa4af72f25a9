package ingestca

import "net"

var loopback = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
