package signal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-voice/parley/proto"
)

// The offline mailbox holds sealed chat messages (proto.TypeSealed) for
// users who are offline, and the receipts for them, until they sign in.
// To seal, a sender needs the recipient's encryption key: every user's
// (with its binding signature) is kept in the users bucket and carried in
// presence, offline users included.
//
//	sender --sealed--> server: check sender_key and the binding of
//	                   sender_enc, limits; publish to the mail stream
//	                   (parley.mail.<to>.<from>, acknowledged by JetStream
//	                   once stored, replicated in a cluster); ack
//	server --sealed--> recipient: at sign-in, every waiting message in
//	                   store order (one direct-get batch); while online,
//	                   at once (a "mail" message on the recipient's subject)
//	recipient --delivered(id)--> the recipient's node: delete the stored
//	                   message; sealed_receipt -> sender, now or (stored in
//	                   the receipt stream, parley.rcpt.<sender>) at sign-in
//
// A message stays stored until the recipient's receipt arrives, so one cut
// off mid-delivery is sent again at its next sign-in (the client drops
// duplicates by id); a server restart loses nothing once the sender has
// its ack. The store holds only ciphertext: the server cannot read it.
//
// Limits: the mail stream's per-subject limit is the per-sender quota
// within one mailbox (a full one refuses the new message: DiscardNew per
// subject); the server checks the recipient's total count and bytes
// before storing; the stream's age limit drops what nobody fetched.

// OfflineLimits bounds the offline mailbox. Zero fields take the defaults.
type OfflineLimits struct {
	// MaxMessages is how many messages may wait for one recipient.
	// Zero means 200.
	MaxMessages int
	// MaxPerSender is how many of those one sender may fill: a stranger
	// cannot jam someone's mailbox (issue 10 item 4). Zero means a quarter
	// of MaxMessages (at least 1).
	MaxPerSender int
	// MaxBytes bounds the sealed bytes (ciphertext, base64 as sent)
	// waiting for one recipient. Zero means 2 MiB.
	MaxBytes int
	// MaxMessageBytes bounds one sealed ciphertext. Zero means
	// proto.MaxSealedCiphertext.
	MaxMessageBytes int
	// MaxAge is how long a message waits before it is dropped. Zero means
	// 30 days.
	MaxAge time.Duration
	// MaxReceipts bounds the receipts waiting for one sender (the oldest
	// are dropped beyond it). Zero means 1000.
	MaxReceipts int
}

func (l *OfflineLimits) setDefaults() {
	if l.MaxMessages <= 0 {
		l.MaxMessages = 200
	}
	if l.MaxPerSender <= 0 {
		l.MaxPerSender = max(1, l.MaxMessages/4)
	}
	l.MaxPerSender = min(l.MaxPerSender, l.MaxMessages)
	if l.MaxBytes <= 0 {
		l.MaxBytes = 2 << 20
	}
	if l.MaxMessageBytes <= 0 || l.MaxMessageBytes > proto.MaxSealedCiphertext {
		l.MaxMessageBytes = proto.MaxSealedCiphertext
	}
	if l.MaxAge <= 0 {
		l.MaxAge = 30 * 24 * time.Hour
	}
	if l.MaxReceipts <= 0 {
		l.MaxReceipts = 1000
	}
}

// stored is one waiting message, as kept in the mail stream.
type stored struct {
	From   string       `json:"from"`
	Sealed proto.Sealed `json:"sealed"`
}

// receiptRec is one waiting receipt: By fetched the sender's message ID
// (or refused it, with that code).
type receiptRec struct {
	By      string     `json:"by"`
	ID      string     `json:"id"`
	Refused proto.Code `json:"refused,omitempty"`
}

// mailbox is the server's offline-message service.
type mailbox struct {
	s   *Server
	lim OfflineLimits
	now func() time.Time
}

func newMailbox(s *Server, lim OfflineLimits) *mailbox {
	return &mailbox{s: s, lim: lim, now: time.Now}
}

func mailSubject(to, from string) string { return subjMail + nkey(to) + "." + nkey(from) }
func mailFilter(to string) string        { return subjMail + nkey(to) + ".*" }
func rcptSubject(sender string) string   { return subjRcpt + nkey(sender) }

// mailKey names a delivered message in a session's map.
func mailKey(from, id string) string { return from + "/" + id }

// intercept handles the routed messages that concern the mailbox: every
// sealed message, and a receipt for a stored message. It reports whether
// it took env (the caller routes it otherwise).
func (m *mailbox) intercept(ss *session, env *proto.Envelope) bool {
	switch env.Type {
	case proto.TypeSealed:
		m.accept(ss, env)
		return true
	case proto.TypeDelivered:
		r, err := proto.DecodeBody[*proto.Receipt](env)
		if err != nil {
			return false
		}
		ss.mu.Lock()
		seq, ok := ss.mail[mailKey(env.To, r.ID)]
		ss.mu.Unlock()
		if !ok {
			return false // an ordinary receipt: route it
		}
		if err := m.remove(seq); err != nil {
			m.s.log.Error("signal: offline store", "op", "remove", "err", err)
			ss.sendError(proto.Errorf(proto.CodeUnavailable, "offline store unavailable; send the receipt again"), env.ID)
			return true
		}
		ss.mu.Lock()
		delete(ss.mail, mailKey(env.To, r.ID))
		ss.mu.Unlock()
		ss.ack(env.ID)
		m.receipt(env.To, ss.name, r.ID, r.Refused)
		return true
	}
	return false
}

// remove deletes a stored message by its stream sequence.
func (m *mailbox) remove(seq uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.s.st.mail.DeleteMsg(ctx, seq)
	if err != nil && (errors.Is(err, jetstream.ErrMsgNotFound) || strings.Contains(err.Error(), "no message found")) {
		return nil // gone already (another receipt, or expired)
	}
	return err
}

// accept stores a sealed message and, if the recipient is online, sends it.
func (m *mailbox) accept(ss *session, env *proto.Envelope) {
	s := m.s
	sl, err := proto.DecodeBody[*proto.Sealed](env)
	if err != nil {
		ss.violation(asProtoErr(err), env.ID)
		return
	}
	if sl.SenderKey != ss.key {
		s.stats.spoofed.Add(1)
		ss.violation(proto.Errorf(proto.CodeForbidden, "sealed sender_key is not the key you signed in with"), env.ID)
		return
	}
	key, _ := proto.DecodePublicKey(ss.key)
	if _, err := proto.VerifyEncKey(key, ss.name, sl.SenderEnc, sl.SenderEncSig); err != nil {
		ss.violation(proto.Errorf(proto.CodeForbidden, "sealed sender_enc is not bound to your key and name: %v", err), env.ID)
		return
	}
	if _, _, ok := s.users.get(env.To); !ok {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _, ok, _ = s.users.fetch(ctx, env.To)
		cancel()
		if !ok {
			ss.sendError(proto.Errorf(proto.CodeNotFound, "no user is named %q; nothing can be left for them", env.To), env.ID)
			return
		}
	}
	size := len(sl.CiphertextBytes())
	if size > m.lim.MaxMessageBytes {
		ss.sendError(proto.Errorf(proto.CodeTooLarge, "sealed message of %d bytes exceeds the offline limit of %d bytes", size, m.lim.MaxMessageBytes), env.ID)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The same message (sender, id) stored and not yet fetched is not
	// stored twice; one fetched and deleted is stored again (its receipt
	// may have been lost: the recipient acknowledges it again).
	dup, err := m.stored(ctx, env.To, ss.name, sl.ID)
	if err != nil {
		s.log.Error("signal: offline store", "op", "dedupe", "to", env.To, "err", err)
		ss.sendError(proto.Errorf(proto.CodeUnavailable, "offline store unavailable; try again"), env.ID)
		return
	}
	if dup {
		ss.ack(env.ID)
		return
	}
	if perr := m.checkRoom(ctx, env.To, len(sl.Ciphertext)); perr != nil {
		ss.sendError(perr, env.ID)
		return
	}
	if used, full := s.storeFull(); full { // limits.go
		ss.sendError(proto.Errorf(proto.CodeOverBudget, "this server's store is full (%d of %d bytes); the message waits with you and is sent again later", used, s.cfg.StoreBudget), env.ID)
		return
	}
	sl.Stored = m.now().UnixMilli()
	data, err := json.Marshal(&stored{From: ss.name, Sealed: *sl})
	if err != nil {
		ss.sendError(proto.Errorf(proto.CodeInternal, "encode: %v", err), env.ID)
		return
	}
	ack, err := s.st.js.Publish(ctx, mailSubject(env.To, ss.name), data)
	if err != nil {
		ss.sendError(m.storeError(env.To, err), env.ID)
		return
	}
	s.log.Debug("signal: stored offline message", "from", ss.name, "to", env.To, "bytes", len(sl.Ciphertext))
	ss.ack(env.ID)
	ss.markUsed()
	hdr := map[string]string{hdrSeq: strconv.FormatUint(ack.Sequence, 10)}
	if dst := s.localSession(env.To); dst != nil {
		m.deliverOne(dst, ack.Sequence, data)
	} else {
		s.router.publish(env.To, opMail, hdr, data)
	}
}

// stored reports whether from's message id waits for to.
func (m *mailbox) stored(ctx context.Context, to, from, id string) (bool, error) {
	msgs, err := m.s.st.directBatch(ctx, streamMail, mailSubject(to, from), 1, m.lim.MaxPerSender+16)
	if err != nil {
		return false, err
	}
	for _, dm := range msgs {
		var r stored
		if json.Unmarshal(dm.data, &r) == nil && r.Sealed.ID == id {
			return true, nil
		}
	}
	return false, nil
}

// checkRoom refuses a message when the recipient's mailbox is full.
func (m *mailbox) checkRoom(ctx context.Context, to string, b64len int) *proto.Error {
	n, err := m.waiting(ctx, to)
	if err != nil {
		m.s.log.Error("signal: offline store", "op", "count", "to", to, "err", err)
		return proto.Errorf(proto.CodeUnavailable, "offline store unavailable; try again")
	}
	if n >= m.lim.MaxMessages {
		return proto.Errorf(proto.CodeOverBudget, "%s already has %d offline messages waiting (the limit); try again after they come online", to, m.lim.MaxMessages)
	}
	// Counting bytes means reading the mailbox: only when the count says
	// it could be over.
	if (n+1)*(m.lim.MaxMessageBytes*4/3+4) > m.lim.MaxBytes {
		msgs, err := m.s.st.directBatch(ctx, streamMail, mailFilter(to), 1, n+16)
		if err != nil {
			return proto.Errorf(proto.CodeUnavailable, "offline store unavailable; try again")
		}
		total := b64len // as the old store counted: the base64 as stored
		for _, dm := range msgs {
			var r stored
			if json.Unmarshal(dm.data, &r) == nil {
				total += len(r.Sealed.Ciphertext)
			}
		}
		if total > m.lim.MaxBytes {
			return proto.Errorf(proto.CodeOverBudget, "%s's offline mailbox is full (%d bytes waiting is the limit); try again after they come online", to, m.lim.MaxBytes)
		}
	}
	return nil
}

// storeError says why JetStream refused a message.
func (m *mailbox) storeError(to string, err error) *proto.Error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "maximum messages per subject"):
		return proto.Errorf(proto.CodeOverBudget, "you already have %d messages waiting for %s (the limit per sender); try again after they come online", m.lim.MaxPerSender, to)
	case strings.Contains(msg, "maximum bytes"), strings.Contains(msg, "insufficient resources"), strings.Contains(msg, "maximum messages exceeded"):
		return proto.Errorf(proto.CodeOverBudget, "this server's message store is full; try again later")
	}
	m.s.log.Error("signal: offline store", "op", "put", "to", to, "err", err)
	return proto.Errorf(proto.CodeUnavailable, "offline store unavailable; try again")
}

// waiting counts the messages waiting for to.
func (m *mailbox) waiting(ctx context.Context, to string) (int, error) {
	info, err := m.s.st.mail.Info(ctx, jetstream.WithSubjectFilter(mailFilter(to)))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n, nil
}

// deliverOne sends one stored message (data as kept in the stream) to ss,
// unless it has it already.
func (m *mailbox) deliverOne(ss *session, seq uint64, data []byte) bool {
	var r stored
	if err := json.Unmarshal(data, &r); err != nil {
		m.s.log.Warn("signal: dropping an offline message that does not decode", "to", ss.name, "seq", seq, "err", err)
		m.remove(seq)
		return true
	}
	sl := r.Sealed
	env, err := proto.New(proto.TypeSealed, sl.ID, ss.name, &sl)
	if err != nil {
		// Stored by an older server (the retired NaCl scheme) or damaged:
		// no client can open it, so it goes.
		m.s.log.Warn("signal: dropping an offline message that no longer validates", "to", ss.name, "from", r.From, "err", err)
		if err := m.remove(seq); err != nil {
			m.s.log.Error("signal: offline store", "op", "remove", "err", err)
		}
		return true
	}
	env.From = r.From
	k := mailKey(r.From, sl.ID)
	ss.mu.Lock()
	if ss.mail == nil {
		ss.mail = map[string]uint64{}
	}
	if old, dup := ss.mail[k]; dup && old <= seq {
		ss.mu.Unlock()
		return true
	}
	ss.mail[k] = seq
	ss.mu.Unlock()
	m.s.watches.talked(ss, r.From) // the sender's presence first (presence.go)
	return ss.sendEnv(env)
}

// onNotify delivers a message stored for a user signed in to this node.
func (m *mailbox) onNotify(ss *session, msg *nats.Msg) {
	if ss == nil {
		return
	}
	seq, _ := strconv.ParseUint(msg.Header.Get(hdrSeq), 10, 64)
	m.deliverOne(ss, seq, msg.Data)
}

// mailBatch is how many messages one direct get fetches.
const mailBatch = 256

// deliver sends ss's waiting messages in order, then its waiting receipts.
// Called after the welcome.
func (m *mailbox) deliver(ss *session) {
	s := m.s
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for from := uint64(1); ; {
		msgs, err := s.st.directBatch(ctx, streamMail, mailFilter(ss.name), from, mailBatch)
		if err != nil {
			s.log.Error("signal: offline store", "op", "list", "user", ss.name, "err", err)
			break
		}
		for _, dm := range msgs {
			if !m.deliverOne(ss, dm.seq, dm.data) {
				return
			}
			from = dm.seq + 1
		}
		if len(msgs) < mailBatch {
			break
		}
	}
	rcs, err := s.st.directBatch(ctx, streamRcpt, rcptSubject(ss.name), 1, m.lim.MaxReceipts+16)
	if err != nil {
		s.log.Error("signal: offline store", "op", "receipts", "user", ss.name, "err", err)
		return
	}
	var last uint64
	for _, dm := range rcs {
		var r receiptRec
		if json.Unmarshal(dm.data, &r) != nil {
			continue
		}
		env, err := proto.New(proto.TypeSealedReceipt, "", "", &proto.Receipt{ID: r.ID, Refused: r.Refused})
		if err != nil {
			continue
		}
		env.From = r.By
		if !ss.sendEnv(env) {
			break
		}
		last = dm.seq
	}
	if last > 0 {
		if err := s.st.rcpt.Purge(ctx, jetstream.WithPurgeSubject(rcptSubject(ss.name)), jetstream.WithPurgeSequence(last+1)); err != nil {
			s.log.Warn("signal: offline store", "op", "purge receipts", "user", ss.name, "err", err)
		}
	}
}

// receipt tells sender that by fetched message id (or refused it, with
// that code), now or at sign-in.
func (m *mailbox) receipt(sender, by, id string, refused proto.Code) {
	s := m.s
	env, err := proto.New(proto.TypeSealedReceipt, "", "", &proto.Receipt{ID: id, Refused: refused})
	if err != nil {
		return
	}
	env.From = by
	raw, err := proto.Encode(env)
	if err != nil {
		return
	}
	if dst := s.localSession(sender); dst != nil {
		if dst.enqueue(raw) {
			return
		}
	} else if s.router.request(sender, opRcpt, raw) {
		return
	}
	data, _ := json.Marshal(&receiptRec{By: by, ID: id, Refused: refused})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.st.js.Publish(ctx, rcptSubject(sender), data); err != nil {
		s.log.Error("signal: offline store", "op", "receipt", "err", err)
	}
}

// OfflineWaiting returns how many sealed messages wait for name.
func (s *Server) OfflineWaiting(name string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.offline.waiting(ctx, name)
}

// MailboxStats is the offline mailboxes at one moment, in counts and sizes
// (never names): what an operator's status page shows.
type MailboxStats struct {
	Messages   int64 // sealed messages waiting, all mailboxes
	Bytes      int64 // what they take in the store
	Mailboxes  int   // recipients with at least one message waiting
	Largest    int64 // messages waiting for the fullest mailbox
	StoreBytes int64 // the whole store (mail, receipts, names)
	Budget     int64 // the store's budget (Config.StoreBudget)
}

// MailboxStats reads the mail stream's state: totals, and per recipient
// how many mailboxes hold mail and the fullest one's count.
func (s *Server) MailboxStats(ctx context.Context) (MailboxStats, error) {
	st := MailboxStats{Budget: s.cfg.StoreBudget}
	info, err := s.st.mail.Info(ctx, jetstream.WithSubjectFilter(subjMail+">"))
	if err != nil {
		return st, fmt.Errorf("signal: mailbox stats: %w", err)
	}
	st.Messages, st.Bytes = int64(info.State.Msgs), int64(info.State.Bytes)
	per := map[string]int64{} // recipient -> messages
	for subj, n := range info.State.Subjects {
		to, _, ok := strings.Cut(strings.TrimPrefix(subj, subjMail), ".")
		if !ok {
			continue
		}
		per[to] += int64(n)
	}
	st.Mailboxes = len(per)
	for _, n := range per {
		st.Largest = max(st.Largest, n)
	}
	st.StoreBytes = s.storeBytes(ctx)
	return st, nil
}
