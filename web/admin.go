package web

import (
	"context"
	"net/http"
	"time"

	"github.com/meshchat/meshchat/chat"
)

// The admin view's backend. GET /api/admin/node answers, on every node,
// about that node alone: its connections, the rooms it serves with their
// members, its broker's health and its latest slow consumers. The view
// (a page served by one node) asks every node in turn, so the endpoint
// answers CORS for the origins the node already allows (the cluster's
// node URLs, --origins), with credentials, and the admin's cookie works
// across the nodes. Admins act through POST /api/admin/ban, unban and
// disconnect. Each takes an admin's session or the API key as a bearer
// token.

// adminReportWait bounds the broker checks of one report.
const adminReportWait = 3 * time.Second

// Inspector is what the admin view needs to know that only the node can
// tell (the node adapts its broker to it).
type Inspector interface {
	// BrokerHealth reports whether the broker can carry traffic.
	BrokerHealth(ctx context.Context) BrokerHealth
	// RoomOwner names the node that orders room's messages, or "" when
	// the broker has no such node (Redis).
	RoomOwner(room string) string
}

// BrokerHealth is the broker's health as the admin view shows it.
type BrokerHealth struct {
	OK bool `json:"ok"`
	// Error says what is wrong when OK is false.
	Error string `json:"error,omitempty"`
	// Links are the mesh broker's links to the other nodes.
	Links []LinkHealth `json:"links,omitempty"`
}

// LinkHealth is the mesh broker's link to one other node.
type LinkHealth struct {
	Node  string `json:"node"`
	State string `json:"state"` // "up", "down" or "idle" (nothing sent yet)
	Error string `json:"error,omitempty"`
}

type adminRoom struct {
	Room    string   `json:"room"`
	Members []string `json:"members"`
	Local   int      `json:"local"`
	Private bool     `json:"private"`
	Owner   string   `json:"owner,omitempty"`
	Node    string   `json:"owner_node,omitempty"`
}

type slowConsumer struct {
	User string `json:"user"`
	Conn string `json:"conn"`
	At   int64  `json:"at"`
}

type nodeReport struct {
	Node          string         `json:"node"`
	Broker        string         `json:"broker"`
	Time          int64          `json:"time"`
	Ready         bool           `json:"ready"`
	NotReady      string         `json:"not_ready,omitempty"`
	Connections   int            `json:"connections"`
	QueueBytes    int            `json:"queue_bytes"`
	Health        BrokerHealth   `json:"broker_health"`
	Rooms         []adminRoom    `json:"rooms"`
	SlowConsumers []slowConsumer `json:"slow_consumers"`
	SlowTotal     uint64         `json:"slow_consumers_total"`
	Cluster       []clusterNode  `json:"cluster"`
}

// adminWho lets through an admin: a request carrying the API key, or an
// admin's session (cookie or token). It answers any other request itself,
// 401 or 403, and returns who acts.
func (s *Server) adminWho(w http.ResponseWriter, r *http.Request) (string, bool) {
	if s.hasAPIKey(r) {
		return "api key", true
	}
	id, err := s.authenticate(r, false)
	if err != nil {
		authFailed(w, err, "log in as an admin, or send the API key")
		return "", false
	}
	if !s.admins[id.user] {
		writeError(w, http.StatusForbidden, CodeForbidden, "admins only")
		return "", false
	}
	return id.user, true
}

// adminAction runs the checks of an admin's action on a user: origin,
// admin, a body naming a valid "user". It answers a refused request
// itself.
func (s *Server) adminAction(w http.ResponseWriter, r *http.Request) (by, user string, ok bool) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, CodeForbiddenOrigin, "origin not allowed")
		return "", "", false
	}
	if by, ok = s.adminWho(w, r); !ok {
		return "", "", false
	}
	c, ok := readCredentials(w, r)
	if !ok || !chat.ValidName(c.User) {
		writeError(w, http.StatusBadRequest, CodeBadName, `body must name a valid "user"`)
		return "", "", false
	}
	return by, c.User, true
}

// handleAdminDisconnect closes every connection of a user, on every node
// (the user may connect again; a ban keeps them out).
func (s *Server) handleAdminDisconnect(w http.ResponseWriter, r *http.Request) {
	by, user, ok := s.adminAction(w, r)
	if !ok {
		return
	}
	if err := s.hub.DisconnectUser(r.Context(), user); err != nil {
		s.writeChatError(w, err)
		return
	}
	s.log.Info("disconnect", "user", user, "by", by)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleAdminNode(w http.ResponseWriter, r *http.Request) {
	if !s.corsAllowed(w, r) {
		return
	}
	if _, ok := s.adminWho(w, r); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminReportWait)
	defer cancel()
	rep := nodeReport{
		Node:          s.node,
		Broker:        s.cfg.BrokerName,
		Time:          time.Now().UnixMilli(),
		Ready:         true,
		Connections:   s.hub.Clients(),
		QueueBytes:    s.hub.QueuedBytes(),
		Rooms:         []adminRoom{},
		SlowConsumers: []slowConsumer{},
		SlowTotal:     s.hub.Stats().SlowConsumers,
		Cluster:       s.clusterNodes(r),
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(ctx); err != nil {
			rep.Ready, rep.NotReady = false, err.Error()
		}
	}
	rep.Health = BrokerHealth{OK: rep.Ready, Error: rep.NotReady}
	if s.cfg.Inspector != nil {
		rep.Health = s.cfg.Inspector.BrokerHealth(ctx)
	}
	for _, ri := range s.hub.Rooms() {
		room := adminRoom{Room: ri.Name, Members: ri.Online, Local: ri.Local, Private: ri.Owner != "", Owner: ri.Owner}
		if s.cfg.Inspector != nil {
			room.Node = s.cfg.Inspector.RoomOwner(ri.Name)
		}
		rep.Rooms = append(rep.Rooms, room)
	}
	for _, sc := range s.hub.SlowConsumers() {
		rep.SlowConsumers = append(rep.SlowConsumers, slowConsumer{User: sc.User, Conn: sc.Conn, At: sc.At.UnixMilli()})
	}
	writeJSON(w, http.StatusOK, rep)
}
