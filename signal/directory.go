package signal

import (
	"slices"
	"strings"
	"sync"

	"github.com/parley-voice/parley/proto"
)

// The directory: every node keeps the names of its users replica in order
// (all registered names, and those online), so a page of a prefix search
// costs a binary search and the page, whatever the number of users.
//
// Config.Directory chooses what others may list: every registered name
// (DirectoryAll, the default), only people online (DirectoryOnline), or
// nothing (DirectoryOff: contacts only).

// DirectoryMode is what the directory lists.
type DirectoryMode string

const (
	DirectoryAll    DirectoryMode = ""       // every registered name, with presence
	DirectoryOnline DirectoryMode = "online" // only people online now
	DirectoryOff    DirectoryMode = "off"    // no directory
)

// sortedSet is a set of strings in order, kept as chunks of at most
// chunkMax sorted strings: insert and remove move at most a chunk.
type sortedSet struct {
	chunks [][]string
	n      int
}

const chunkMax = 512

// chunkFor is the index of the first chunk whose last string is >= x, or
// the last chunk.
func (s *sortedSet) chunkFor(x string) int {
	i, _ := slices.BinarySearchFunc(s.chunks, x, func(c []string, x string) int { return strings.Compare(c[len(c)-1], x) })
	return min(i, len(s.chunks)-1)
}

func (s *sortedSet) insert(x string) bool {
	if len(s.chunks) == 0 {
		s.chunks = [][]string{{x}}
		s.n = 1
		return true
	}
	ci := s.chunkFor(x)
	c := s.chunks[ci]
	j, found := slices.BinarySearch(c, x)
	if found {
		return false
	}
	c = slices.Insert(c, j, x)
	if len(c) > chunkMax {
		half := len(c) / 2
		lo := append([]string(nil), c[:half]...)
		hi := append([]string(nil), c[half:]...)
		s.chunks = slices.Insert(s.chunks, ci+1, hi)
		c = lo
	}
	s.chunks[ci] = c
	s.n++
	return true
}

func (s *sortedSet) remove(x string) bool {
	if len(s.chunks) == 0 {
		return false
	}
	ci := s.chunkFor(x)
	c := s.chunks[ci]
	j, found := slices.BinarySearch(c, x)
	if !found {
		return false
	}
	c = slices.Delete(c, j, j+1)
	if len(c) == 0 {
		s.chunks = slices.Delete(s.chunks, ci, ci+1)
	} else {
		s.chunks[ci] = c
	}
	s.n--
	return true
}

// scan calls fn with the strings > after (>= from when after is empty),
// in order, until fn returns false.
func (s *sortedSet) scan(from string, after bool, fn func(string) bool) {
	if len(s.chunks) == 0 {
		return
	}
	for ci := s.chunkFor(from); ci < len(s.chunks); ci++ {
		c := s.chunks[ci]
		j, found := slices.BinarySearch(c, from)
		if found && after {
			j++
		}
		for ; j < len(c); j++ {
			if !fn(c[j]) {
				return
			}
		}
		from, after = "", false
	}
}

// dirIndex holds the names in order.
type dirIndex struct {
	mu     sync.RWMutex // guards the sets
	all    sortedSet
	online sortedSet
}

func (d *dirIndex) setRegistered(name string, registered bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if registered {
		d.all.insert(name)
	} else {
		d.all.remove(name)
		d.online.remove(name)
	}
}

func (d *dirIndex) setOnline(name string, online bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if online {
		d.online.insert(name)
	} else {
		d.online.remove(name)
	}
}

// page lists up to limit names matching q (but not me), and the name to
// continue after when there are more.
func (d *dirIndex) page(q *proto.DirectoryQuery, me string, limit int) (names []string, next string) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	set := &d.all
	if q.Online {
		set = &d.online
	}
	from, after := q.Prefix, false
	if q.After != "" && q.After >= q.Prefix {
		from, after = q.After, true
	}
	set.scan(from, after, func(n string) bool {
		if !strings.HasPrefix(n, q.Prefix) {
			return false
		}
		if n == me {
			return true
		}
		names = append(names, n)
		return len(names) <= limit
	})
	if len(names) > limit {
		names = names[:limit]
		next = names[limit-1]
	}
	return names, next
}
