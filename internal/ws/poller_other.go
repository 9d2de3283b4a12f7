//go:build !linux

package ws

import "errors"

// poller is Linux-only; elsewhere each connection has a reader goroutine.
type poller struct{}

func newPoller() (*poller, error)            { return nil, errors.New("no epoll on this platform") }
func (p *poller) add(c *Conn, fd int) error  { return errors.ErrUnsupported }
func (p *poller) remove(c *Conn, fd int)     {}
func (p *poller) run()                       {}
func (p *poller) close(done <-chan struct{}) {}
