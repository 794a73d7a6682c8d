// A Go HTTPS server (net/http, ListenAndServeTLS) answering OpenAI-shaped chat completions, for the
// recorder's test of Go's crypto/tls on the server side.
//
//	tlsserver -addr 127.0.0.1:0 -cert server.pem -key server.key
//
// It prints {"port": N} once it listens, and serves until killed.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

const Answer = "Hello from the Go server."

func chat(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model string `json:"model"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, `{"error": {"message": "bad json"}}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]interface{}{
		"id": "chatcmpl-go-server", "object": "chat.completion", "model": req.Model,
		"choices": []map[string]interface{}{{"index": 0, "finish_reason": "stop",
			"message": map[string]string{"role": "assistant", "content": Answer}}},
		"usage": map[string]int{"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
	})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	cert := flag.String("cert", "server.pem", "certificate chain (PEM)")
	key := flag.String("key", "server.key", "private key (PEM)")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("{\"port\": %d}\n", ln.Addr().(*net.TCPAddr).Port)
	http.HandleFunc("/v1/chat/completions", chat)
	srv := &http.Server{}
	fmt.Fprintln(os.Stderr, srv.ServeTLS(ln, *cert, *key))
	os.Exit(1)
}
