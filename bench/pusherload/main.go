// Command pusherload compares a Pusher socket with a seed socket on the
// same server: the memory each idle one holds (heap and stacks from
// /metrics, before and after opening them), and fan-out of one channel to
// many subscribers (deliveries per second counted at the clients).
//
//	RELAY_PUSHER_APP_ID=app1 RELAY_PUSHER_APP_KEY=key1 RELAY_PUSHER_APP_SECRET=secret-0123456789abcdef \
//	  taskset -c 0 relay -connect-rate 0 -register-rate 0 &
//	taskset -c 1 pusherload -mode pusher -test memory -n 5000
//	taskset -c 1 pusherload -mode seed -test fanout -n 1000 -messages 1000
//
// The fan-out figure is bound by the clients here (one core of gorilla
// readers): it compares the two protocols' paths, not the server's ceiling,
// which relay bench and the shared loadgen measure.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

var (
	addr     = flag.String("addr", "127.0.0.1:8000", "server address")
	mode     = flag.String("mode", "pusher", "pusher or seed")
	test     = flag.String("test", "fanout", "memory or fanout")
	n        = flag.Int("n", 1000, "sockets")
	messages = flag.Int("messages", 1000, "messages (fanout)")
	app      = flag.String("app", "app1", "Pusher app id")
	key      = flag.String("key", "key1", "Pusher app key")
	secret   = flag.String("secret", "secret-0123456789abcdef", "Pusher app secret")
)

func main() {
	flag.Parse()
	switch *test {
	case "memory":
		memory()
	case "fanout":
		fanout()
	default:
		panic("-test: memory or fanout")
	}
}

// open opens a socket subscribed to channel (a Pusher channel, or the
// seed topic of the same name).
func open(channel string) *websocket.Conn {
	if *mode == "pusher" {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+*addr+"/app/"+*key+"?protocol=7", nil)
		if err != nil {
			panic(err)
		}
		c.ReadMessage() // connection_established
		c.WriteJSON(map[string]any{"event": "pusher:subscribe", "data": map[string]string{"channel": channel}})
		c.ReadMessage() // subscription_succeeded
		return c
	}
	resp, err := http.Post("http://"+*addr+"/register", "application/json", strings.NewReader(`{"user_id":1}`))
	if err != nil {
		panic(err)
	}
	var r struct{ URL string }
	json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	c, _, err := websocket.DefaultDialer.Dial(r.URL, nil)
	if err != nil {
		panic(err)
	}
	c.WriteMessage(websocket.TextMessage, []byte(`{"topics":["`+channel+`"]}`))
	return c
}

// inUse is the server's heap and stacks in use.
func inUse() float64 {
	resp, err := http.Get("http://" + *addr + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "go_memstats_heap_inuse_bytes ") || strings.HasPrefix(l, "go_memstats_stack_inuse_bytes ") {
			v, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			sum += v
		}
	}
	return sum
}

func memory() {
	before := inUse()
	conns := make([]*websocket.Conn, 0, *n)
	for i := range *n {
		conns = append(conns, open(fmt.Sprintf("chan-%d", i%100)))
	}
	time.Sleep(3 * time.Second)
	after := inUse()
	fmt.Printf("%s: %d idle sockets on 100 channels: heap+stacks %.0f -> %.0f bytes, %.0f B per socket\n", *mode, *n, before, after, (after-before)/float64(*n))
	for _, c := range conns {
		c.Close()
	}
}

// signed returns path with a Pusher HTTP API signature for body.
func signed(path string, body []byte) string {
	sum := md5.Sum(body)
	q := fmt.Sprintf("auth_key=%s&auth_timestamp=%d&auth_version=1.0&body_md5=%s", *key, time.Now().Unix(), hex.EncodeToString(sum[:]))
	m := hmac.New(sha256.New, []byte(*secret))
	m.Write([]byte("POST\n" + path + "\n" + q))
	return path + "?" + q + "&auth_signature=" + hex.EncodeToString(m.Sum(nil))
}

func fanout() {
	var got atomic.Int64
	for range *n {
		c := open("fan")
		go func() {
			for {
				_, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				if !bytes.Contains(msg, []byte("pusher:ping")) {
					got.Add(1)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	got.Store(0)
	start := time.Now()
	var pubs sync.WaitGroup
	for w := range 4 {
		pubs.Go(func() {
			for i := w; i < *messages; i += 4 {
				var req *http.Request
				if *mode == "pusher" {
					body := []byte(fmt.Sprintf(`{"name":"e","channel":"fan","data":"message %d"}`, i))
					req, _ = http.NewRequest("POST", "http://"+*addr+signed("/apps/"+*app+"/events", body), bytes.NewReader(body))
				} else {
					req, _ = http.NewRequest("POST", "http://"+*addr+"/publish", strings.NewReader(fmt.Sprintf(`{"topic":"fan","message":"message %d"}`, i)))
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					panic(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					panic(resp.Status)
				}
			}
		})
	}
	pubs.Wait()
	want := int64(*n * *messages)
	for deadline := time.Now().Add(60 * time.Second); got.Load() < want && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(start)
	fmt.Printf("%s: %d subscribers x %d messages: %d/%d delivered in %v, %.0f deliveries/s\n", *mode, *n, *messages, got.Load(), want, el.Round(time.Millisecond), float64(got.Load())/el.Seconds())
}
