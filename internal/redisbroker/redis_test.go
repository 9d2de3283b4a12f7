package redisbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// flushPrefix deletes every key under prefix, so tests leave the shared
// Redis as they found it.
func flushPrefix(t *testing.T, url, prefix string) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		t.Errorf("ParseURL(%s) = %v", url, err)
		return
	}
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Logf("cleaning up %s*: %v", prefix, err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cursor uint64
	for range 10_000 {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+":*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			t.Logf("cleaning up %s*: %v", prefix, err)
			return
		}
		if len(e.Elements) > 0 {
			c.Do(ctx, c.B().Del().Key(e.Elements...).Build())
		}
		if cursor = e.Cursor; cursor == 0 {
			return
		}
	}
}
