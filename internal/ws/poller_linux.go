//go:build linux

package ws

import (
	"os"
	"sync"
	"syscall"
)

// poller reads many connections from one goroutine, so an idle connection
// costs no goroutine and no stack. It is an epoll instance of its own
// (level-triggered, EPOLLIN) whose descriptor is in turn registered with
// Go's network poller: when nothing is ready the loop goroutine parks there
// like any other, so no thread blocks in epoll_wait and the scheduler stays
// in charge.
//
// The loop goroutine owns reading: it runs each connection's parser and
// handler, and it alone removes a connection and closes its socket (see
// Conn.readerExit), so a handler never runs after HandleClose.
type poller struct {
	epfd   int
	file   *os.File // epfd, registered with Go's network poller
	raw    syscall.RawConn
	events []syscall.EpollEvent // owned by the loop

	mu    sync.Mutex
	conns []*Conn // by file descriptor
}

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &poller{epfd: epfd, file: f, raw: raw, events: make([]syscall.EpollEvent, 256)}, nil
}

// add starts watching c, whose descriptor is fd.
func (p *poller) add(c *Conn, fd int) error {
	p.mu.Lock()
	if fd >= len(p.conns) {
		p.conns = append(p.conns, make([]*Conn, fd+1-len(p.conns)+len(p.conns)/2)...)
	}
	p.conns[fd] = c
	p.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.forget(c, fd)
		return err
	}
	return nil
}

// remove stops watching c. The socket must still be open.
func (p *poller) remove(c *Conn, fd int) {
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	p.forget(c, fd)
}

func (p *poller) forget(c *Conn, fd int) {
	p.mu.Lock()
	if fd < len(p.conns) && p.conns[fd] == c {
		p.conns[fd] = nil
	}
	p.mu.Unlock()
}

func (p *poller) lookup(fd int32) *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if int(fd) < len(p.conns) {
		return p.conns[fd]
	}
	return nil
}

// run serves readiness events until close.
func (p *poller) run() {
	for {
		var n int
		err := p.raw.Read(func(uintptr) bool {
			var err error
			for {
				n, err = syscall.EpollWait(p.epfd, p.events, 0)
				if err != syscall.EINTR {
					break
				}
			}
			return n > 0 // none ready: park until the epoll descriptor is
		})
		if err != nil {
			return // closed
		}
		for _, ev := range p.events[:n] {
			// A descriptor removed (or reused) since epoll_wait returned
			// is looked up afresh; a stale event costs one EAGAIN read.
			if c := p.lookup(ev.Fd); c != nil {
				c.readable()
			}
		}
	}
}

// close stops the loop and ends the connections still registered, as their
// reader would have.
func (p *poller) close(done <-chan struct{}) {
	p.file.Close()
	<-done
	p.mu.Lock()
	left := make([]*Conn, 0)
	for _, c := range p.conns {
		if c != nil {
			left = append(left, c)
		}
	}
	p.mu.Unlock()
	for _, c := range left {
		c.readerExit()
	}
}
