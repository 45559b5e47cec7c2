package proto

// Contacts-scoped presence. The welcome no longer lists who is online (a
// frame that grew with the number of users); instead a client says whose
// presence it wants, and the server answers with their presence and then
// streams their changes:
//
//	client --contacts{replace, add, remove}--> server
//	server --presence_list{ref, entries}--> client   (≤ MaxPresenceList each)
//	server --ack{ref}--> client                       (after the lists)
//	server --presence{...}--> client                  (each later change)
//
// The server also has the client hear about anyone it routes a message to
// or receives one from (people it talked to), before that message.
// Where the server allows it (Welcome.Directory), a client can page
// through and search the names registered there:
//
//	client --directory{prefix, after, limit, online, watch}--> server
//	server --directory_page{ref, entries, next, watching}--> client
//
// With watch, the entries of the page are watched like contacts until the
// next directory query; when the whole answer fits in one page (watching
// is true), people who come online later and match are added and sent as
// presence too — on a small server a page of online users stays live; on a
// big one it is a snapshot to page through. No frame's size grows with the
// number of users.
const (
	TypeContacts      Type = "contacts"       // C→S: whose presence to hear
	TypePresenceList  Type = "presence_list"  // S→C: presence of several users (answer to contacts)
	TypeDirectory     Type = "directory"      // C→S: a page of the directory
	TypeDirectoryPage Type = "directory_page" // S→C: the page
)

// Limits of the contacts and directory messages.
const (
	// MaxContactsPerFrame bounds the names in one contacts message (a
	// longer list is sent in several, the first with Replace).
	MaxContactsPerFrame = 1000
	// MaxPresenceList bounds the entries of one presence_list or
	// directory_page (an entry with keys is ~330 bytes).
	MaxPresenceList = 64
	// MaxDirectoryLimit bounds a directory page.
	MaxDirectoryLimit = 50
)

// Contacts changes whose presence the client hears: with Replace, the
// list becomes Add; otherwise Add are added and Remove removed.
type Contacts struct {
	Replace bool     `json:"replace,omitempty"`
	Add     []string `json:"add,omitempty"`
	Remove  []string `json:"remove,omitempty"`
}

func (c *Contacts) Validate() error {
	if len(c.Add)+len(c.Remove) > MaxContactsPerFrame {
		return Errorf(CodeTooLarge, "more than %d names in one contacts message; send the rest in another", MaxContactsPerFrame)
	}
	for _, list := range [][]string{c.Add, c.Remove} {
		for _, n := range list {
			if err := ValidateName(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// PresenceList carries the presence of several users: the answer to a
// contacts message (Ref is its envelope id). Names that are not
// registered are left out.
type PresenceList struct {
	Ref     string     `json:"ref,omitempty"`
	Entries []Presence `json:"entries"`
}

func (l *PresenceList) Validate() error {
	if l.Ref != "" {
		if err := ValidateID(l.Ref); err != nil {
			return err
		}
	}
	return validateEntries(l.Entries)
}

func validateEntries(es []Presence) error {
	if len(es) > MaxPresenceList {
		return Errorf(CodeTooLarge, "more than %d presence entries in one frame", MaxPresenceList)
	}
	for i := range es {
		if es[i].Name == "" {
			return Errorf(CodeBadRequest, "presence entry without a name")
		}
		if err := es[i].Validate(); err != nil {
			return err
		}
	}
	return nil
}

// DirectoryQuery asks for a page of the names registered on the server:
// those starting with Prefix, in name order, after After (the Next of the
// page before), at most Limit (0 means MaxDirectoryLimit); with Online,
// only those online. With Watch, the entries' presence changes follow
// (see the package comment above).
type DirectoryQuery struct {
	Prefix string `json:"prefix,omitempty"`
	After  string `json:"after,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	Online bool   `json:"online,omitempty"`
	Watch  bool   `json:"watch,omitempty"`
}

func (q *DirectoryQuery) Validate() error {
	if len(q.Prefix) > MaxNameLen {
		return Errorf(CodeBadRequest, "prefix longer than %d", MaxNameLen)
	}
	for i := 0; i < len(q.Prefix); i++ {
		c := q.Prefix[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return Errorf(CodeBadName, "prefix %q: names hold only lowercase letters, digits, '-', '_' and '.'", truncate(q.Prefix, 40))
		}
	}
	if q.After != "" {
		if err := ValidateName(q.After); err != nil {
			return err
		}
	}
	if q.Limit < 0 || q.Limit > MaxDirectoryLimit {
		return Errorf(CodeBadRequest, "limit must be 0–%d", MaxDirectoryLimit)
	}
	return nil
}

// DirectoryPage answers a DirectoryQuery (Ref is its envelope id). Next,
// when set, is the After of the next page. Watching says that people who
// match and come online later will be sent as presence too.
type DirectoryPage struct {
	Ref      string     `json:"ref,omitempty"`
	Entries  []Presence `json:"entries"`
	Next     string     `json:"next,omitempty"`
	Watching bool       `json:"watching,omitempty"`
}

func (p *DirectoryPage) Validate() error {
	if p.Ref != "" {
		if err := ValidateID(p.Ref); err != nil {
			return err
		}
	}
	if p.Next != "" {
		if err := ValidateName(p.Next); err != nil {
			return err
		}
	}
	return validateEntries(p.Entries)
}

func init() {
	register(TypeContacts, func() Body { return new(Contacts) })
	register(TypePresenceList, func() Body { return new(PresenceList) })
	register(TypeDirectory, func() Body { return new(DirectoryQuery) })
	register(TypeDirectoryPage, func() Body { return new(DirectoryPage) })
}
