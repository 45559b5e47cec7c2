// Package testutil holds small helpers shared by Parley's tests.
package testutil

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// Recorder collects values from a channel so a test can wait for one that
// matches, with a deadline, instead of sleeping.
type Recorder[T any] struct {
	mu   sync.Mutex // guards all
	all  []T
	cond *sync.Cond
	done bool
}

// Record reads ch until it closes.
func Record[T any](ch <-chan T) *Recorder[T] {
	r := &Recorder[T]{}
	r.cond = sync.NewCond(&r.mu)
	go func() {
		for v := range ch {
			r.mu.Lock()
			r.all = append(r.all, v)
			r.cond.Broadcast()
			r.mu.Unlock()
		}
		r.mu.Lock()
		r.done = true
		r.cond.Broadcast()
		r.mu.Unlock()
	}()
	return r
}

// All returns a copy of everything recorded so far.
func (r *Recorder[T]) All() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.all...)
}

// Len is how many values have been recorded; pass it to WaitSince to wait
// only for what comes after this moment.
func (r *Recorder[T]) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all)
}

// Wait returns the first recorded value (from the start) that match
// accepts, waiting up to d for it. match runs with the recorder locked and
// must not call the recorder.
func (r *Recorder[T]) Wait(t testing.TB, d time.Duration, what string, match func(T) bool) T {
	t.Helper()
	return r.WaitSince(t, 0, d, what, match)
}

// WaitSince is Wait over the values recorded after the first since.
func (r *Recorder[T]) WaitSince(t testing.TB, since int, d time.Duration, what string, match func(T) bool) T {
	t.Helper()
	v, err := r.waitErr(since, d, match)
	if err != nil {
		t.Fatalf("waiting for %s: %v; saw %s", what, err, r.describe())
	}
	return v
}

// WaitErr is Wait without a test.
func (r *Recorder[T]) WaitErr(d time.Duration, match func(T) bool) (T, error) {
	return r.waitErr(0, d, match)
}

func (r *Recorder[T]) waitErr(since int, d time.Duration, match func(T) bool) (T, error) {
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer timer.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := since; ; {
		for ; i < len(r.all); i++ {
			if match(r.all[i]) {
				return r.all[i], nil
			}
		}
		if r.done {
			var zero T
			return zero, fmt.Errorf("channel closed")
		}
		if time.Now().After(deadline) {
			var zero T
			return zero, fmt.Errorf("timed out after %v", d)
		}
		r.cond.Wait()
	}
}

// Count returns how many recorded values match.
func (r *Recorder[T]) Count(match func(T) bool) int { return r.CountSince(0, match) }

// CountSince is Count over the values recorded after the first since.
func (r *Recorder[T]) CountSince(since int, match func(T) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.all[min(since, len(r.all)):] {
		if match(v) {
			n++
		}
	}
	return n
}

func (r *Recorder[T]) describe() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := ""
	start := 0
	if len(r.all) > 30 {
		start = len(r.all) - 30
	}
	for _, v := range r.all[start:] {
		s += fmt.Sprintf("\n  %T %+v", v, v)
	}
	return s
}

// Eventually polls cond every 10 ms until it holds, failing the test if d
// passes first.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
