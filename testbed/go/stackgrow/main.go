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
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"oisp.test/selfsigned"
)

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
	selfsigned.Check(err)
}

func main() {
	n := flag.Int("n", 2000, "depths to write from")
	flag.Parse()
	a, b := net.Pipe()
	server := tls.Server(b, selfsigned.ServerConfig("stack"))
	client := tls.Client(a, &tls.Config{InsecureSkipVerify: true, ServerName: "stack"})
	go func() { selfsigned.Check(server.Handshake()) }()
	selfsigned.Check(client.Handshake())
	total := 7 * *n
	read := make(chan int)
	go func() {
		got, err := io.ReadFull(server, make([]byte, total))
		selfsigned.Check(err)
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
