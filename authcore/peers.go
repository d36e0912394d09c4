package authcore

import (
	"slices"
	"sync"
)

// Peers are the Services of one store that run side by side: at a config
// reload, the old config's and the new one's, for a moment. A session
// one of them ends, or a user it changes, is dropped from every peer's
// cache as well and told to every peer's watches, so that none goes on
// trusting its copy (for a request, up to CacheTTL; for a watched
// socket, until its next recheck). The zero value is ready to use.
type Peers struct {
	mu     sync.Mutex
	caches []*sessionCache
}

// Join adds s to p. Call Leave when s stops.
func (s *Service) Join(p *Peers) {
	p.mu.Lock()
	p.caches = append(p.caches, s.cache)
	p.mu.Unlock()
	s.cache.peers.Store(p)
}

// Leave takes s out of the peers it joined, if any: it is told of their
// changes no more. Its own changes still reach them: a request that
// began before its app stopped may still end a session through it.
func (s *Service) Leave() {
	p := s.cache.peers.Load()
	if p == nil {
		return
	}
	p.mu.Lock()
	p.caches = slices.DeleteFunc(p.caches, func(c *sessionCache) bool { return c == s.cache })
	p.mu.Unlock()
}

// others returns c's peers, nil when it has none.
func (c *sessionCache) others() []*sessionCache {
	p := c.peers.Load()
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.caches) == 0 || len(p.caches) == 1 && p.caches[0] == c {
		return nil
	}
	out := make([]*sessionCache, 0, len(p.caches))
	for _, o := range p.caches {
		if o != c {
			out = append(out, o)
		}
	}
	return out
}
