package bench

import (
	"encoding/json"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// fakeServer is a one-node server speaking the public contract, small
// enough to reason about, with fault injection so the bench's detectors
// can be shown to fail.
type fakeServer struct {
	opts     fakeOpts
	name     string
	upgrader websocket.Upgrader

	mu         sync.Mutex
	rooms      map[string]*fakeRoom
	deliveries int64
	kicked     map[string]bool
	conns      map[*fakeConn]bool
	wg         sync.WaitGroup
}

type fakeOpts struct {
	// dropEvery drops every Nth delivery to a connection other than the
	// sender (the sender still gets its ack, so the loss counts).
	dropEvery int64
	// dupEvery delivers every Nth delivery twice.
	dupEvery int64
	// kickAfter closes each user's first connection, once, after that
	// many deliveries to it, like a slow-consumer disconnect.
	kickAfter int
	// queueFrames bounds each connection's outbound queue (default
	// 1<<14 frames); with it set, the server's socket send buffer is
	// small too, so a client that stops reading overflows the queue.
	queueFrames int
	// history is how many messages a room retains (default 1000).
	history int
}

type fakeRoom struct {
	next    int
	hist    []fakeMsg
	members map[*fakeConn]bool
}

type fakeMsg struct {
	Type string `json:"type"`
	Room string `json:"room"`
	ID   string `json:"id"`
	From string `json:"from"`
	Text string `json:"text"`
	TS   int64  `json:"ts"`
	Ref  string `json:"ref,omitempty"`
}

type fakeConn struct {
	user      string
	ws        *websocket.Conn
	out       chan []byte
	quit      chan struct{}
	once      sync.Once
	delivered int
	closeCode int
}

var fakeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

const fakeCookie = "fake_session"

func newFakeServer(opts fakeOpts) *fakeServer {
	return &fakeServer{
		opts:   opts,
		name:   "fake1",
		rooms:  map[string]*fakeRoom{},
		kicked: map[string]bool{},
		conns:  map[*fakeConn]bool{},
	}
}

func (s *fakeServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/login", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Name string `json:"name"`
		}
		if json.NewDecoder(r.Body).Decode(&body) != nil || !fakeNameRE.MatchString(body.Name) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":{"code":"bad_name","message":"bad name"}}`))
			return
		}
		http.SetCookie(w, &http.Cookie{Name: fakeCookie, Value: body.Name, Path: "/"})
		_ = json.NewEncoder(w).Encode(map[string]string{"user": body.Name, "node": s.name})
	})
	mux.HandleFunc("GET /api/cluster", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"node": s.name, "broker": "mesh",
			"nodes": []map[string]string{{"name": s.name, "http": "http://" + r.Host, "state": "alive"}},
		})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /ws", s.serveWS)
	return mux
}

func (s *fakeServer) serveWS(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie(fakeCookie)
	if err != nil {
		http.Error(w, `{"error":{"code":"unauthorized","message":"log in"}}`, http.StatusUnauthorized)
		return
	}
	if r.Header.Get("Origin") != "" {
		http.Error(w, `{"error":{"code":"forbidden_origin","message":"no"}}`, http.StatusForbidden)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	queue := 1 << 14
	if s.opts.queueFrames > 0 {
		queue = s.opts.queueFrames
		if tc, ok := ws.NetConn().(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(16 << 10)
		}
	}
	c := &fakeConn{user: ck.Value, ws: ws, out: make(chan []byte, queue), quit: make(chan struct{})}
	s.mu.Lock()
	s.conns[c] = true
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for {
			// A kicked connection writes nothing more: a frame queued
			// after the one it was kicked for would open a gap.
			select {
			case b := <-c.out:
				if c.kicked() {
					continue
				}
				if ws.WriteMessage(websocket.TextMessage, b) != nil {
					return
				}
			case <-c.quit:
				code := c.closeCode
				if code == 0 {
					code = websocket.CloseGoingAway
				}
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "bye"), time.Now().Add(time.Second))
				ws.Close()
				return
			}
		}
	}()
	s.enqueue(c, map[string]any{"type": "welcome", "user": c.user, "node": s.name, "nodes": []string{"http://" + r.Host}})

	for {
		var in struct {
			Type, Room, After, Text, Ref string
		}
		if ws.ReadJSON(&in) != nil {
			break
		}
		switch in.Type {
		case "join":
			s.join(c, in.Room, in.After)
		case "send":
			s.send(c, in.Room, in.Text, in.Ref)
		}
	}
	s.mu.Lock()
	for _, room := range s.rooms {
		delete(room.members, c)
	}
	delete(s.conns, c)
	s.mu.Unlock()
	c.kick(0)
	<-writerDone
	ws.Close()
}

// kicked reports whether the connection is being ended.
func (c *fakeConn) kicked() bool {
	select {
	case <-c.quit:
		return true
	default:
		return false
	}
}

// kick ends the connection with code (0: going away).
func (c *fakeConn) kick(code int) {
	c.once.Do(func() {
		c.closeCode = code
		close(c.quit)
	})
}

func (s *fakeServer) enqueue(c *fakeConn, v any) {
	if c.kicked() {
		return
	}
	b, _ := json.Marshal(v)
	select {
	case c.out <- b:
	default:
		c.kick(4008) // slow consumer
	}
}

func (s *fakeServer) join(c *fakeConn, name, after string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	room := s.rooms[name]
	if room == nil {
		room = &fakeRoom{members: map[*fakeConn]bool{}}
		s.rooms[name] = room
	}
	room.members[c] = true
	hist, recovered := room.hist, false
	if after != "" {
		for i, m := range room.hist {
			if m.ID == after {
				hist, recovered = room.hist[i+1:], true
				break
			}
		}
	}
	var members []string
	for m := range room.members {
		members = append(members, m.user)
	}
	s.enqueue(c, map[string]any{"type": "joined", "room": name, "members": members, "history": hist, "recovered": recovered})
	for m := range room.members {
		if m != c {
			s.enqueue(m, map[string]any{"type": "presence", "room": name, "user": c.user, "online": true})
		}
	}
}

func (s *fakeServer) send(c *fakeConn, name, text, ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	room := s.rooms[name]
	if room == nil || !room.members[c] {
		s.enqueue(c, map[string]any{"type": "error", "code": "not_joined", "message": "join first", "ref": ref})
		return
	}
	room.next++
	msg := fakeMsg{Type: "message", Room: name, ID: strconv.Itoa(room.next), From: c.user, Text: text, TS: time.Now().UnixMilli()}
	room.hist = append(room.hist, msg)
	keep := 1000
	if s.opts.history > 0 {
		keep = s.opts.history
	}
	if len(room.hist) > keep {
		room.hist = room.hist[len(room.hist)-keep:]
	}
	for m := range room.members {
		out := msg
		if m == c {
			out.Ref = ref
		}
		s.deliveries++
		n := s.deliveries
		if m != c && s.opts.dropEvery > 0 && n%s.opts.dropEvery == 0 {
			continue
		}
		s.enqueue(m, out)
		if s.opts.dupEvery > 0 && n%s.opts.dupEvery == 0 {
			s.enqueue(m, out)
		}
		m.delivered++
		if s.opts.kickAfter > 0 && m.delivered == s.opts.kickAfter && !s.kicked[m.user] {
			s.kicked[m.user] = true
			delete(room.members, m)
			m.kick(4008)
		}
	}
}

// closeAll ends every connection and waits for their handlers.
func (s *fakeServer) closeAll() {
	s.mu.Lock()
	for c := range s.conns {
		c.kick(0)
	}
	s.mu.Unlock()
	s.wg.Wait()
}
