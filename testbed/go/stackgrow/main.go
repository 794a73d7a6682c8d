// Calls crypto/tls.(*Conn).Write from goroutines whose stacks are nearly full, so that some of the
// calls grow the stack in Write's own prologue: Go then runs runtime.morestack and starts Write again
// from its first instruction (tests/ebpf/test_go_tls.py: a probe there must not record the bytes twice).
//
// A tls.Client and a tls.Server of this process talk over net.Pipe. It prints {"ready": true} after
// the handshake and waits for a line on stdin; then, for each depth 0..N-1, a new goroutine recurses
// to that depth and writes "<DDDDD>" once. The server reads them all and the program prints
// {"written": bytes, "read": bytes}.
//
//	stackgrow -n 2000
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
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
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"stack"},
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

// descend uses a little stack per level, so that consecutive depths end a few bytes apart and one of
// them leaves Write's prologue just short of the stack's limit.
//
//go:noinline
func descend(depth int, conn *tls.Conn, msg []byte) {
	if depth > 0 {
		descend(depth-1, conn, msg)
		return
	}
	_, err := conn.Write(msg)
	check(err)
}

func main() {
	n := flag.Int("n", 2000, "depths to write from")
	flag.Parse()
	a, b := net.Pipe()
	server := tls.Server(b, serverConfig())
	client := tls.Client(a, &tls.Config{InsecureSkipVerify: true, ServerName: "stack"})
	go func() { check(server.Handshake()) }()
	check(client.Handshake())
	total := 7 * *n
	read := make(chan int)
	go func() {
		got, err := io.ReadFull(server, make([]byte, total))
		check(err)
		read <- got
	}()
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]bool{"ready": true})
	bufio.NewReader(os.Stdin).ReadString('\n')
	for depth := 0; depth < *n; depth++ {
		done := make(chan struct{})
		msg := []byte(fmt.Sprintf("<%05d>", depth))
		go func() {
			descend(depth, client, msg)
			close(done)
		}()
		<-done
	}
	out.Encode(map[string]int{"written": total, "read": <-read})
}
