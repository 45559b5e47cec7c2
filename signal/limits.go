package signal

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-voice/parley/proto"
	"golang.org/x/time/rate"
)

// Disk stays bounded (issue 10 item 5): names and mailboxes cost nothing
// to make, so
//
//   - new names are limited per source address (a token bucket per IPv4
//     address or IPv6 /64, on each node);
//   - the store has a global budget (Config.StoreBudget): past it the
//     server registers no new names and stores no new mail, and says so;
//   - a name never used after its registration (no second sign-in, nothing
//     sent) expires after RegistrationLimits.UnusedTTL, with its mail,
//     freeing the name: the janitor (one node, by lease) sweeps.
//
// Replies (receipts, answers, declines...) and floods (issue 10 item 3):
// a client's own rate limit counts what it starts; what it sends in reply
// to others has a limit of its own and never counts as a violation, so a
// flood aimed at someone cannot get them disconnected through their own
// receipts. Each recipient also has an inbound limit across all senders:
// past it, senders are told rate_limited (the sender is throttled, never
// the target).

// RegistrationLimits bounds new names. The zero value takes the defaults.
type RegistrationLimits struct {
	// PerAddr is how many new names one source address may register at
	// once, PerAddrEvery how often it may register one more. Zero means
	// 20, and one every 3 minutes.
	PerAddr      int
	PerAddrEvery time.Duration
	// Exempt lists source prefixes without a limit. Nil means loopback
	// (a reverse proxy on this host must pass the real address on instead,
	// or be listed elsewhere); an empty, non-nil list exempts nothing.
	Exempt []netip.Prefix
	// UnusedTTL is how long a name nobody used after registering it is
	// kept. Zero means 7 days.
	UnusedTTL time.Duration
	// SweepEvery is how often the janitor looks for such names. Zero means
	// a minute.
	SweepEvery time.Duration
}

func (l *RegistrationLimits) setDefaults() {
	if l.PerAddr <= 0 {
		l.PerAddr = 20
	}
	if l.PerAddrEvery <= 0 {
		l.PerAddrEvery = 3 * time.Minute
	}
	if l.Exempt == nil {
		l.Exempt = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	if l.UnusedTTL <= 0 {
		l.UnusedTTL = 7 * 24 * time.Hour
	}
	if l.SweepEvery <= 0 {
		l.SweepEvery = time.Minute
	}
}

// maxAddrLimiters bounds the per-address limiters kept (the oldest go).
const maxAddrLimiters = 100000

// regLimiter keeps a token bucket per source address.
type regLimiter struct {
	lim RegistrationLimits

	mu    sync.Mutex // guards the fields below
	addrs map[string]*rate.Limiter
	order []string // insertion order, for eviction
}

// addrKey is the limited unit of a remote address: the IPv4 address, the
// IPv6 /64, or the whole string when it is no IP.
func addrKey(remote string) (string, netip.Addr) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return remote, netip.Addr{}
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String(), ip
	}
	return ip.String(), ip
}

// allow takes one registration from remote's bucket.
func (r *regLimiter) allow(remote string) bool {
	key, ip := addrKey(remote)
	for _, p := range r.lim.Exempt {
		if ip.IsValid() && p.Contains(ip) {
			return true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.addrs[key]
	if l == nil {
		if len(r.order) >= maxAddrLimiters {
			delete(r.addrs, r.order[0])
			r.order = r.order[1:]
		}
		l = rate.NewLimiter(rate.Every(r.lim.PerAddrEvery), r.lim.PerAddr)
		r.addrs[key] = l
		r.order = append(r.order, key)
	}
	return l.Allow()
}

// admitNewName decides whether ss may register a new name: its address's
// limit, and the store's budget.
func (s *Server) admitNewName(ss *session) error {
	if !s.regLimit.allow(ss.remote) {
		s.stats.rateLimited.Add(1)
		return proto.Errorf(proto.CodeRateLimited, "too many new names from your address; try again in %s, or sign in with a name you have", s.cfg.Registration.PerAddrEvery.Round(time.Second))
	}
	if used, full := s.storeFull(); full {
		return proto.Errorf(proto.CodeOverBudget, "this server's store is full (%d of %d bytes); it registers no new names until space is freed", used, s.cfg.StoreBudget)
	}
	return nil
}

// storeUsage caches what the buckets and streams hold, read at most once
// a second.
type storeUsage struct {
	mu    sync.Mutex // guards the fields below
	at    time.Time
	bytes int64
}

// storeFull reports the bytes the store holds and whether they reach the
// budget.
func (s *Server) storeFull() (int64, bool) {
	u := &s.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	if time.Since(u.at) > time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		u.at, u.bytes = time.Now(), s.storeBytes(ctx)
	}
	return u.bytes, u.bytes >= s.cfg.StoreBudget
}

// storeBytes is what the store holds now: mail, receipts and names.
func (s *Server) storeBytes(ctx context.Context) int64 {
	var total int64
	for _, st := range []jetstream.Stream{s.st.mail, s.st.rcpt} {
		if info, err := st.Info(ctx); err == nil {
			total += int64(info.State.Bytes)
		}
	}
	if st, err := s.st.users.Status(ctx); err == nil {
		total += int64(st.Bytes())
	}
	return total
}

// janitor expires names nobody used after registering them. It runs on
// the node holding the janitor lease.
func (s *Server) janitor() {
	cutoff := time.Now().Add(-s.cfg.Registration.UnusedTTL).UnixMilli()
	type victim struct {
		name string
		rev  uint64
	}
	var vs []victim
	s.users.mu.RLock()
	for n, x := range s.users.m {
		r := &x.rec
		if !r.Used && r.Reg != 0 && r.Reg < cutoff && rawStatus(r) == proto.StatusOffline {
			vs = append(vs, victim{n, x.rev})
		}
	}
	s.users.mu.RUnlock()
	for _, v := range vs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		// Only this revision: a sign-in meanwhile changes it, and keeps it.
		err := s.st.users.Purge(ctx, nkey(v.name), jetstream.LastRevision(v.rev))
		if err == nil {
			s.st.mail.Purge(ctx, jetstream.WithPurgeSubject(mailFilter(v.name)))
			s.st.rcpt.Purge(ctx, jetstream.WithPurgeSubject(rcptSubject(v.name)))
			s.stats.expiredNames.Add(1)
			s.log.Info("signal: expired a name never used after its registration", "name", v.name)
		}
		cancel()
	}
}

// isReply reports whether t is sent in answer to something another user
// sent: such frames do not count against the sender's rate limit.
func isReply(t proto.Type) bool {
	switch t {
	case proto.TypeDelivered, proto.TypeRead, proto.TypeAnswer, proto.TypeCandidate, proto.TypeDecline, proto.TypeBye:
		return true
	}
	return false
}

// replyRate is how many replies per second (and at once) a session may
// send beyond its own rate limit; past it, replies are dropped, not counted
// as violations.
const (
	replyRate  = 200
	replyBurst = 1000
)
