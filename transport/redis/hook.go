package redis

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/transport"
)

// Commands are the names a CommandHook observes a command under: the
// commands the broker and the stores send, the broker's scripts by name
// (EVALSHA of a known script), "pipeline" for a pipeline or transaction
// as a whole, and OtherCommand for anything else, so that the label
// values stay a fixed set.
var Commands = []string{
	"publish_script", "history_script", "presence_clean_script",
	"eval", "evalsha", "script",
	"get", "set", "setex", "del", "expire", "exists",
	"hget", "hset", "hdel", "hmget", "hkeys", "hgetall",
	"smembers", "sadd", "srem", "publish", "ping", "info",
	"pipeline", OtherCommand,
}

// OtherCommand is the name a CommandHook observes a command under when
// Commands does not list it.
const OtherCommand = "other"

// scriptNames names the broker's scripts by their SHA-1, as EVALSHA
// sends it.
var scriptNames = map[string]string{
	publishScript.Hash():       "publish_script",
	historyScript.Hash():       "history_script",
	presenceCleanScript.Hash(): "presence_clean_script",
}

// CommandHook is a go-redis hook that observes how long each command
// (each attempt, failed ones too) and each pipeline took, in seconds,
// into one Observer per name of Commands. It is set up once: a command
// costs a map lookup and the Observer's Observe, no allocation.
type CommandHook struct {
	byName map[string]transport.Observer
	script map[string]transport.Observer // by SHA-1
	other  transport.Observer
	pipe   transport.Observer
}

var _ goredis.Hook = (*CommandHook)(nil)

// NewCommandHook asks observer once for each name of Commands.
func NewCommandHook(observer func(cmd string) transport.Observer) *CommandHook {
	h := &CommandHook{byName: make(map[string]transport.Observer, len(Commands)), script: make(map[string]transport.Observer)}
	for _, name := range Commands {
		h.byName[name] = observer(name)
	}
	for sha, name := range scriptNames {
		h.script[sha] = h.byName[name]
	}
	h.other, h.pipe = h.byName[OtherCommand], h.byName["pipeline"]
	return h
}

// observer is where cmd's duration goes.
func (h *CommandHook) observer(cmd goredis.Cmder) transport.Observer {
	name := cmd.Name()
	if name == "evalsha" {
		if args := cmd.Args(); len(args) > 1 {
			if sha, ok := args[1].(string); ok {
				if o, ok := h.script[sha]; ok {
					return o
				}
			}
		}
	}
	if o, ok := h.byName[name]; ok {
		return o
	}
	return h.other
}

// DialHook implements goredis.Hook: dials are not measured.
func (h *CommandHook) DialHook(next goredis.DialHook) goredis.DialHook {
	return next
}

// ProcessHook implements goredis.Hook.
func (h *CommandHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		t0 := time.Now()
		err := next(ctx, cmd)
		h.observer(cmd).Observe(time.Since(t0).Seconds())
		return err
	}
}

// ProcessPipelineHook implements goredis.Hook: a pipeline is one
// observation, under "pipeline".
func (h *CommandHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		t0 := time.Now()
		err := next(ctx, cmds)
		h.pipe.Observe(time.Since(t0).Seconds())
		return err
	}
}
