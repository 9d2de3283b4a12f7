// Command publishrate measures HTTP publishes per second, one event per
// request (POST /publish) or many (POST /publish/batch), with 32 requests
// in flight. It shows what batching buys when the request itself, not the
// fan-out, is the cost.
//
//	publishrate -batch 1     # POST /publish
//	publishrate -batch 100   # POST /publish/batch, 100 events per request
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	base := flag.String("http", "http://127.0.0.1:8000", "server base URL")
	batch := flag.Int("batch", 1, "events per request; 1 uses POST /publish")
	key := flag.String("key", "", "API key, if the server needs one")
	dur := flag.Duration("duration", 5*time.Second, "how long to publish")
	flag.Parse()
	ev := `{"topic":"bench","message":"{\"seq\":1,\"pad\":\"` + strings.Repeat("x", 80) + `\"}"}`
	body, path := ev, "/publish"
	if *batch > 1 {
		body, path = "["+strings.TrimSuffix(strings.Repeat(ev+",", *batch), ",")+"]", "/publish/batch"
	}
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var events atomic.Int64
	deadline := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest(http.MethodPost, *base+path, bytes.NewReader([]byte(body)))
				if *key != "" {
					req.Header.Set("Authorization", "Bearer "+*key)
				}
				resp, err := c.Do(req)
				if err != nil {
					fmt.Fprintln(os.Stderr, "publishrate:", err)
					os.Exit(1)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					fmt.Fprintln(os.Stderr, "publishrate: status", resp.StatusCode)
					os.Exit(1)
				}
				events.Add(int64(*batch))
			}
		})
	}
	wg.Wait()
	fmt.Printf("publishrate: %d events per request: %.0f events/s\n", *batch, float64(events.Load())/dur.Seconds())
}
