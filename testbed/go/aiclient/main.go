// A Go net/http client of an OpenAI-compatible chat API, for the recorder's Go crypto/tls tests.
//
// It makes the calls a scenario names and prints, per call, one JSON line of what it saw: the model,
// the assembled answer and the token counts, the ground truth the analyzer's events must equal.
// HTTP/2 is Go's default over TLS; GODEBUG=http2client=0 makes it HTTP/1.1.
//
//	aiclient -base https://api.openai.com -scenario basic|concurrent|big|loop [-n N] [-tag T] [-wait | -wait-file F] [-stop-file F]
//	aiclient -base https://localhost:PORT -scenario repeat -n N [-interval-ms 10]
//
// The repeat scenario (bench/discovery_latency.py) sends N requests `POST /go/<i>`, each on a new
// connection, one every interval from the process's start, and prints {"pid", "sent": [{"i", "t_ms"}]}:
// t_ms counted from exec, on the boot clock, as testbed/tls_repeat_client.py does.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
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

// bootNs is CLOCK_BOOTTIME in ns: the clock of /proc/<pid>/stat's start time.
func bootNs() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 7 /* CLOCK_BOOTTIME */, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

// startedNs is the process's start (exec) in ns of the boot clock, from /proc/self/stat (in ticks of
// USER_HZ, 100 on Linux).
func startedNs() int64 {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	var ticks int64
	fmt.Sscan(fields[19], &ticks)
	return ticks * 10_000_000
}

// repeat sends n requests on new connections, one every interval, and prints when each was sent.
func repeat(base string, n int, interval time.Duration) error {
	start := startedNs()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	type sent struct {
		I   int     `json:"i"`
		TMs float64 `json:"t_ms"`
	}
	var times []sent
	for i := 0; i < n; i++ {
		req, err := http.NewRequest("POST", fmt.Sprintf("%s/go/%d", base, i),
			strings.NewReader(fmt.Sprintf("go request %d", i)))
		if err != nil {
			return err
		}
		// sent: once the connection is up (TLS handshake done), as the other clients count it
		trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
			times = append(times, sent{i, float64(bootNs()-start) / 1e6})
		}}
		resp, err := c.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if i+1 < n {
			time.Sleep(interval) // the workload's pacing, not a synchronisation
		}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{"pid": os.Getpid(), "sent": times})
}

func main() {
	base := flag.String("base", "https://api.openai.com", "API base URL")
	scenario := flag.String("scenario", "basic", "basic, concurrent, big or loop")
	n := flag.Int("n", 50, "calls for concurrent and loop")
	tag := flag.String("tag", "go", "marker prefix")
	wait := flag.Bool("wait", false, "print {\"ready\": true} and wait for a line on stdin before calling")
	waitFile := flag.String("wait-file", "", "print {\"ready\": true} and wait until this file exists")
	stopFile := flag.String("stop-file", "", "loop: stop (before n calls) once this file exists")
	intervalMs := flag.Int("interval-ms", 10, "repeat: milliseconds between requests")
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
	case "repeat":
		if err := repeat(*base, *n, time.Duration(*intervalMs)*time.Millisecond); err != nil {
			fmt.Fprintln(os.Stderr, "call failed:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown scenario", *scenario)
		os.Exit(2)
	}
}
