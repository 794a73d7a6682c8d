// A crypto/tls micro-benchmark for the recorder's Go probe overhead (bench/go_probe_overhead.py).
//
// A tls.Client and a tls.Server of this process talk over net.Pipe (no syscalls, so the probes'
// cost is not hidden behind the network). It prints {"ready": true} after the handshake, then, for
// each line "SIZE N" on stdin, sends N records of SIZE bytes that the server echoes back and prints
// {"size", "n", "calls", "ns_per_call"}: every round trip is 4 probed calls (2 Write, 2 Read).
//
//	tlsbench < commands
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"oisp.test/selfsigned"
)

// echo reads records of the size announced on sizes and writes each one back.
func echo(conn *tls.Conn, sizes <-chan int) {
	buf := make([]byte, 1<<16)
	for size := range sizes {
		_, err := io.ReadFull(conn, buf[:size])
		selfsigned.Check(err)
		_, err = conn.Write(buf[:size])
		selfsigned.Check(err)
	}
}

func main() {
	a, b := net.Pipe()
	server := tls.Server(b, selfsigned.ServerConfig("bench"))
	client := tls.Client(a, &tls.Config{InsecureSkipVerify: true, ServerName: "bench"})
	go func() { selfsigned.Check(server.Handshake()) }()
	selfsigned.Check(client.Handshake())
	sizes := make(chan int, 1)
	go echo(server, sizes)
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]bool{"ready": true})
	buf := make([]byte, 1<<16)
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		var size, n int
		_, err := fmt.Sscan(lines.Text(), &size, &n)
		selfsigned.Check(err)
		start := time.Now()
		for i := 0; i < n; i++ {
			sizes <- size
			_, err = client.Write(buf[:size])
			selfsigned.Check(err)
			_, err = io.ReadFull(client, buf[:size])
			selfsigned.Check(err)
		}
		elapsed := time.Since(start)
		out.Encode(map[string]interface{}{"size": size, "n": n, "calls": 4 * n,
			"ns_per_call": float64(elapsed.Nanoseconds()) / float64(4*n)})
	}
}
