// A Go net/http client of an OpenAI-compatible chat API, for the recorder's Go crypto/tls tests.
//
// It makes the calls a scenario names and prints, per call, one JSON line of what it saw: the model,
// the assembled answer and the token counts, the ground truth the analyzer's events must equal.
// HTTP/2 is Go's default over TLS; GODEBUG=http2client=0 makes it HTTP/1.1.
//
//	aiclient -base https://api.openai.com -scenario basic|concurrent|big|loop [-n N] [-tag T] [-wait | -wait-file F] [-stop-file F]
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

type result struct {
	Marker           string `json:"marker"`
	Model            string `json:"model"`
	Streaming        bool   `json:"streaming"`
	Status           int    `json:"status"`
	Answer           string `json:"answer"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	Proto            string `json:"proto"`
	RequestBytes     int    `json:"request_bytes"`
	Pid              int    `json:"pid"`
}

var client = &http.Client{}

func call(base, marker, model string, stream bool, padding int) (result, error) {
	content := marker + " Say hello to the Go client."
	if padding > 0 {
		content += " " + strings.Repeat("x", padding)
	}
	req := map[string]interface{}{
		"model":    model,
		"messages": []map[string]string{{"role": "user", "content": content}},
	}
	if stream {
		req["stream"] = true
		req["stream_options"] = map[string]bool{"include_usage": true}
	}
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequest("POST", base+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return result{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer sk-go-test-key-0123456789")
	resp, err := client.Do(hreq)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	r := result{Marker: marker, Streaming: stream, Status: resp.StatusCode, Proto: resp.Proto,
		RequestBytes: len(body), Pid: os.Getpid()}
	if !stream {
		var out struct {
			Model   string `json:"model"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
			Usage usage `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return r, err
		}
		r.Model, r.PromptTokens, r.CompletionTokens = out.Model, out.Usage.PromptTokens, out.Usage.CompletionTokens
		if len(out.Choices) > 0 {
			r.Answer = out.Choices[0].Message.Content
		}
		return r, nil
	}
	var answer strings.Builder
	scanner := bufio.NewScanner(resp.Body)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, "data: ") || line == "data: [DONE]" {
			continue
		}
		var chunk struct {
			Model   string `json:"model"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *usage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(line[6:]), &chunk); err != nil {
			return r, err
		}
		r.Model = chunk.Model
		for _, c := range chunk.Choices {
			answer.WriteString(c.Delta.Content)
		}
		if chunk.Usage != nil {
			r.PromptTokens, r.CompletionTokens = chunk.Usage.PromptTokens, chunk.Usage.CompletionTokens
		}
	}
	r.Answer = answer.String()
	return r, scanner.Err()
}

func main() {
	base := flag.String("base", "https://api.openai.com", "API base URL")
	scenario := flag.String("scenario", "basic", "basic, concurrent, big or loop")
	n := flag.Int("n", 50, "calls for concurrent and loop")
	tag := flag.String("tag", "go", "marker prefix")
	wait := flag.Bool("wait", false, "print {\"ready\": true} and wait for a line on stdin before calling")
	waitFile := flag.String("wait-file", "", "print {\"ready\": true} and wait until this file exists")
	stopFile := flag.String("stop-file", "", "loop: stop (before n calls) once this file exists")
	flag.Parse()
	// the test starts (or checks) the recorder in between: the program is probed before its first call
	if *wait {
		fmt.Println(`{"ready": true}`)
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	if *waitFile != "" {
		fmt.Println(`{"ready": true}`)
		for {
			if _, err := os.Stat(*waitFile); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	out := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	emit := func(r result, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			fmt.Fprintln(os.Stderr, "call failed:", err)
			os.Exit(1)
		}
		out.Encode(r)
	}
	switch *scenario {
	case "basic":
		emit(call(*base, "["+*tag+"-chat]", "gpt-4o-mini", false, 0))
		emit(call(*base, "["+*tag+"-stream]", "gpt-4o-mini", true, 0))
	case "big":
		emit(call(*base, "["+*tag+"-big]", "gpt-4o-mini", false, 1<<20))
	case "concurrent":
		// one HTTP/2 connection: the first call opens it, then all streams share it
		emit(call(*base, "["+*tag+"-first]", "gpt-4o-mini", false, 0))
		var wg sync.WaitGroup
		for i := 0; i < *n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				emit(call(*base, fmt.Sprintf("[%s-c%02d]", *tag, i), "gpt-4o-long", true, 0))
			}(i)
		}
		wg.Wait()
	case "loop":
		// under load while the recorder comes and goes: every answer must stay right
		for i := 0; i < *n; i++ {
			if _, err := os.Stat(*stopFile); *stopFile != "" && err == nil {
				break
			}
			if i%200 == 199 {
				// a new connection now and then: servers end one after so many streams (hypercorn
				// after 1,000), and handshakes and Close run while recorders come and go too
				client.CloseIdleConnections()
			}
			r, err := call(*base, fmt.Sprintf("[%s-l%d]", *tag, i), "gpt-4o-mini", i%2 == 1, 0)
			if err == nil && (r.Status != 200 || r.Answer == "") {
				err = fmt.Errorf("call %d: status %d, answer %q", i, r.Status, r.Answer)
			}
			emit(r, err)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown scenario", *scenario)
		os.Exit(2)
	}
}
