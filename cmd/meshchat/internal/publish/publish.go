// Package publish is the `meshchat publish` command: it posts one message
// into a room through a node's server API (POST /api/server/publish), for
// cron jobs, deploy scripts and the like. It prints the message's id.
//
// Every post carries a ref (a random one unless --ref gives it), so the
// command may retry a post whose answer it did not get, or that a node
// refused as unavailable or rate limited, without storing it twice; it
// retries until --timeout.
package publish

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ErrUsage marks errors in the command line (exit code 2): errors.Is
// finds it in them, their text does not repeat it.
var ErrUsage = errors.New("usage")

type usageErr struct{ error }

func (usageErr) Is(target error) bool { return target == ErrUsage }

// maxText bounds what is read from standard input.
const maxText = 64 << 10

// Env is how the command line reads the environment, shared with the
// other commands: Apply sets every flag not given from its variable,
// Name is the variable a flag reads.
type Env struct {
	Apply func(*flag.FlagSet) error
	Name  func(flag string) string
}

type config struct {
	url, key, room, from, ref string
	timeout                   time.Duration
}

// Main runs `meshchat publish` with args (without the subcommand name).
// The text is the arguments, joined by spaces, or stdin when there are
// none or the only one is "-".
func Main(ctx context.Context, args []string, env Env, stdin io.Reader, stdout io.Writer) error {
	var c config
	fs := flag.NewFlagSet("meshchat publish", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "base URL of any node of the cluster")
	fs.StringVar(&c.key, "api-key", "", "the nodes' --api-key")
	fs.StringVar(&c.room, "room", "", "room to post to")
	fs.StringVar(&c.from, "from", "", "user name the message is posted as")
	fs.StringVar(&c.ref, "ref", "", "idempotency key: a repeat with the same ref, from and text is stored once (default: a random one)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "give up retrying after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, fs, env)
			return err
		}
		return usageErr{fmt.Errorf("publish: %w", err)}
	}
	if err := env.Apply(fs); err != nil {
		return usageErr{fmt.Errorf("publish: %w", err)}
	}
	switch {
	case c.key == "":
		return usageErr{fmt.Errorf("publish: --api-key (or %s) is required", env.Name("api-key"))}
	case c.room == "" || c.from == "":
		return usageErr{errors.New("publish: --room and --from are required")}
	}
	text := strings.Join(fs.Args(), " ")
	if fs.NArg() == 0 || text == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, maxText+1))
		if err != nil {
			return fmt.Errorf("publish: reading the text: %w", err)
		}
		text = strings.TrimRight(string(b), "\n")
	}
	if c.ref == "" {
		var b [12]byte
		_, _ = rand.Read(b[:]) // crypto/rand does not fail
		c.ref = hex.EncodeToString(b[:])
	}
	id, err := post(ctx, c, text)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id)
	return nil
}

func usage(w io.Writer, fs *flag.FlagSet, env Env) {
	fmt.Fprint(w, `Usage: meshchat publish [flags] [text...]

Posts a message into a room through a node's server API (the node needs
--api-key) and prints its id. The text is the arguments, or standard input
when there are none. Every flag also reads the environment variable shown.

Flags:
`)
	fs.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(w, "  --%s\n        %s\n        env %s, default %q\n", f.Name, f.Usage, env.Name(f.Name), f.DefValue)
	})
}

// apiError is the server API's error answer.
type apiError struct {
	Error struct{ Code, Message string }
}

// post posts text, retrying what may succeed later until c.timeout.
func post(ctx context.Context, c config, text string) (string, error) {
	body, err := json.Marshal(map[string]string{"room": c.room, "from": c.from, "text": text, "ref": c.ref})
	if err != nil {
		return "", fmt.Errorf("publish: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	endpoint := strings.TrimRight(c.url, "/") + "/api/server/publish"
	delay := 100 * time.Millisecond
	var last error // the answer of the last attempt that got one
	giveUp := func(err error) error {
		if last != nil {
			err = last
		}
		return fmt.Errorf("%w (gave up after --timeout %v)", err, c.timeout)
	}
	for {
		id, retry, err := postOnce(ctx, client, endpoint, c.key, body)
		switch {
		case err == nil:
			return id, nil
		case ctx.Err() != nil:
			// The timeout cut this attempt short: what the earlier ones
			// were told says more than "context deadline exceeded".
			return "", giveUp(err)
		case !retry:
			return "", err
		}
		last = err
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", giveUp(err)
		case <-t.C:
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// postOnce makes one attempt; retry says whether another may succeed.
func postOnce(ctx context.Context, client *http.Client, endpoint, key string, body []byte) (id string, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return "", false, fmt.Errorf("publish: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return "", ctx.Err() == nil, fmt.Errorf("publish: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusOK {
		var ok struct{ ID string }
		if err := json.Unmarshal(data, &ok); err != nil || ok.ID == "" {
			return "", false, fmt.Errorf("publish: unexpected answer %q", data)
		}
		return ok.ID, false, nil
	}
	var e apiError
	switch {
	case json.Unmarshal(data, &e) != nil || e.Error.Code == "":
		e.Error.Code, e.Error.Message = "http_"+fmt.Sprint(resp.StatusCode), strings.TrimSpace(string(data))
	case resp.StatusCode == http.StatusNotFound:
		e.Error.Message += ": is the node's server API on (--api-key)?"
	}
	retry = resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests ||
		resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout
	return "", retry, fmt.Errorf("publish: %s: %s (HTTP %d)", e.Error.Code, e.Error.Message, resp.StatusCode)
}
