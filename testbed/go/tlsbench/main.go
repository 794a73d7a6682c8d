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
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"time"
)

func serverConfig() *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	check(err)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// echo reads records of the size announced on sizes and writes each one back.
func echo(conn *tls.Conn, sizes <-chan int) {
	buf := make([]byte, 1<<16)
	for size := range sizes {
		_, err := io.ReadFull(conn, buf[:size])
		check(err)
		_, err = conn.Write(buf[:size])
		check(err)
	}
}

func main() {
	a, b := net.Pipe()
	server := tls.Server(b, serverConfig())
	client := tls.Client(a, &tls.Config{InsecureSkipVerify: true, ServerName: "bench"})
	go func() { check(server.Handshake()) }()
	check(client.Handshake())
	sizes := make(chan int, 1)
	go echo(server, sizes)
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]bool{"ready": true})
	buf := make([]byte, 1<<16)
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		var size, n int
		_, err := fmt.Sscan(lines.Text(), &size, &n)
		check(err)
		start := time.Now()
		for i := 0; i < n; i++ {
			sizes <- size
			_, err = client.Write(buf[:size])
			check(err)
			_, err = io.ReadFull(client, buf[:size])
			check(err)
		}
		elapsed := time.Since(start)
		out.Encode(map[string]interface{}{"size": size, "n": n, "calls": 4 * n,
			"ns_per_call": float64(elapsed.Nanoseconds()) / float64(4*n)})
	}
}
