package hub

// clientSet is one user's clients. It stays a slice while small, since
// most users have a few tabs or devices, and becomes a map once large, so
// that removing one of a user's many clients (100,000 registrations
// expiring together) costs O(1) rather than a scan under Hub.regMu.
type clientSet struct {
	list []*Client
	m    map[*Client]struct{}
}

// clientSetThreshold is the size past which a set becomes a map.
const clientSetThreshold = 16

func (s *clientSet) add(c *Client) {
	if s.m != nil {
		s.m[c] = struct{}{}
		return
	}
	s.list = append(s.list, c)
	if len(s.list) > clientSetThreshold {
		s.m = make(map[*Client]struct{}, 2*len(s.list))
		for _, x := range s.list {
			s.m[x] = struct{}{}
		}
		s.list = nil
	}
}

func (s *clientSet) remove(c *Client) {
	if s.m != nil {
		delete(s.m, c)
		return
	}
	for i, x := range s.list {
		if x == c {
			last := len(s.list) - 1
			s.list[i] = s.list[last]
			s.list[last] = nil
			s.list = s.list[:last]
			return
		}
	}
}

func (s *clientSet) len() int {
	if s.m != nil {
		return len(s.m)
	}
	return len(s.list)
}

// each calls f with every client, in no particular order.
func (s *clientSet) each(f func(*Client)) {
	if s.m != nil {
		for c := range s.m {
			f(c)
		}
		return
	}
	for _, c := range s.list {
		f(c)
	}
}
