package webtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// DialOptions shape a dial beyond the session's cookies.
type DialOptions struct {
	Origin string      // sent as the Origin header when set
	Query  string      // appended to /ws, without "?"
	Header http.Header // more request headers
	// NetDial, when set, opens the TCP connection.
	NetDial func(network, addr string) (net.Conn, error)
	// ReadBuffer, when positive, fixes the socket's receive buffer in
	// bytes. Left to autotuning, a loopback socket grows to tens of
	// megabytes, and a client that stops reading (Pause) would take that
	// long to look slow to the server.
	ReadBuffer int
	// OnPing, when set, is called with each ping the server sends, before
	// the pong that answers it.
	OnPing func(data string)
	// TLS verifies a wss:// server (base https://); nil means the
	// system roots.
	TLS *tls.Config
}

// Dial opens /ws on base with the session's cookies, reads the welcome
// frame, which must come first, and checks that it names the session's
// user. The connection is closed when the test ends.
func Dial(tb testing.TB, base string, s Session, o DialOptions) *Conn {
	tb.Helper()
	ws, resp, err := TryDial(base, s, o)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial %s/ws as %s: %v (status %d)", base, s.User, err, status)
	}
	c := Wrap(tb, ws)
	c.Welcome = c.ExpectNext("welcome", 10*time.Second)
	if s.User != "" && c.Welcome.Str("user") != s.User {
		tb.Fatalf("welcome for %s: %v", s.User, c.Welcome)
	}
	return c
}

// TryDial opens /ws on base and returns the raw connection, or the
// handshake's error and response: for tests of refused upgrades.
func TryDial(base string, s Session, o DialOptions) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	for k, v := range o.Header {
		h[k] = v
	}
	for _, c := range s.Cookies {
		h.Add("Cookie", c.Name+"="+c.Value)
	}
	if o.Origin != "" {
		h.Set("Origin", o.Origin)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: o.dial, TLSClientConfig: o.TLS}
	u := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	if o.Query != "" {
		u += "?" + o.Query
	}
	ws, resp, err := d.Dial(u, h)
	if err == nil && o.OnPing != nil {
		ws.SetPingHandler(func(data string) error {
			o.OnPing(data)
			return pong(ws, data)
		})
	}
	return ws, resp, err
}

// dial opens the TCP connection as o asks, in a socket that Pause can
// stop.
func (o DialOptions) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	var err error
	if o.NetDial != nil {
		conn, err = o.NetDial(network, addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	if err != nil {
		return nil, err
	}
	if o.ReadBuffer > 0 {
		tc, ok := conn.(*net.TCPConn)
		if !ok {
			conn.Close()
			return nil, fmt.Errorf("read buffer: %T is not a TCP connection", conn)
		}
		if err := tc.SetReadBuffer(o.ReadBuffer); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return &pausable{Conn: conn}, nil
}

// pong answers a ping the way gorilla's default handler does: a pong
// that cannot be written because the connection is going is no error.
func pong(ws *websocket.Conn, data string) error {
	err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	var ne net.Error
	if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) {
		return nil
	}
	return err
}
