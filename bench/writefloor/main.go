// Command writefloor measures the cost of the one thing fan-out cannot
// avoid: a small write(2) to a loopback TCP socket whose reader runs on
// another CPU. It opens -n connections to itself, reads them from a child
// process (pin it elsewhere), and writes one 130-byte frame to each, -rounds
// times with -gap between rounds, reporting CPU time per write. bench/run.sh
// runs it so every results table carries the floor it was measured on.
//
//	writefloor -serve 127.0.0.1:9999 &            # pinned like the server
//	writefloor -read 127.0.0.1:9999 -n 1000       # pinned like the load generator
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

func main() {
	serve := flag.String("serve", "", "listen here, write to whoever connects")
	read := flag.String("read", "", "connect here and read")
	n := flag.Int("n", 1000, "connections")
	rounds := flag.Int("rounds", 300, "writes per connection")
	gap := flag.Duration("gap", 10*time.Millisecond, "pause between rounds")
	flag.Parse()
	switch {
	case *serve != "":
		writer(*serve, *n, *rounds, *gap)
	case *read != "":
		reader(*read, *n)
	default:
		flag.Usage()
		os.Exit(2)
	}
}

func writer(addr string, n, rounds int, gap time.Duration) {
	ln, err := net.Listen("tcp", addr)
	check(err)
	fds := make([]int, 0, n)
	for len(fds) < n {
		c, err := ln.Accept()
		check(err)
		f, err := c.(*net.TCPConn).File()
		check(err)
		fds = append(fds, int(f.Fd()))
	}
	frame := make([]byte, 130)
	time.Sleep(500 * time.Millisecond)
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	for range rounds {
		for _, fd := range fds {
			syscall.Write(fd, frame)
		}
		time.Sleep(gap)
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(syscall.TimevalToNsec(after.Utime) + syscall.TimevalToNsec(after.Stime) -
		syscall.TimevalToNsec(before.Utime) - syscall.TimevalToNsec(before.Stime))
	fmt.Printf("writefloor: %d connections x %d writes of 130 B, %s apart: %.2f µs of CPU per write\n",
		n, rounds, gap, float64(cpu.Nanoseconds())/float64(n*rounds)/1000)
}

func reader(addr string, n int) {
	ep, err := syscall.EpollCreate1(0)
	check(err)
	for range n {
		c, err := net.Dial("tcp", addr)
		check(err)
		f, err := c.(*net.TCPConn).File()
		check(err)
		fd := int(f.Fd())
		check(syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}))
	}
	events := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for {
		k, err := syscall.EpollWait(ep, events, 5000)
		if err == syscall.EINTR {
			continue
		}
		check(err)
		if k == 0 {
			return // the writer is done
		}
		for _, ev := range events[:k] {
			if m, _ := syscall.Read(int(ev.Fd), buf); m == 0 {
				return
			}
		}
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "writefloor:", err)
		os.Exit(1)
	}
}
