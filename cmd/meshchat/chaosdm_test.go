package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// dmSent is one acknowledged DM: its sender's ref, its text (which holds a
// token unique to it), the id of the sender's copy and how many times the
// sender transmitted it.
type dmSent struct {
	from, to, ref, text, id string
	tx                      int
}

// checkDMs compares what each DM sender's inbox received (inboxes: user ->
// DMs in delivery order, live and from dm_history) with the acknowledged
// DMs. Copies are matched by sender and text (which holds a token unique
// to the DM). It checks that
//   - every acknowledged DM is in its recipient's inbox and in its
//     sender's under exactly one id, the acknowledged one: a DM has one id
//     on every copy;
//   - no id is delivered twice, except a dm_history repeating a DM that
//     the same connection had just received live (the inbox is live from
//     the welcome; the browser client merges by id), counted in overlaps,
//     and the ack of a retried DM, which repeats the original;
//   - the sender saw the ack (a copy with its ref) at least once and at
//     most once per transmission;
//   - nothing arrived that was never acknowledged, nothing carries a ref
//     but the sender's own copies, and every DM involves the inbox's user.
func checkDMs(sent []dmSent, inboxes map[string][]chaosDMRec) (problems []string, overlaps int) {
	type key struct{ from, text string }
	users := make([]string, 0, len(inboxes))
	for u := range inboxes {
		users = append(users, u)
	}
	slices.Sort(users)
	ids := map[string]map[key]map[string]bool{} // user -> DM -> distinct ids
	acks := map[string]map[string]int{}         // user -> ref -> copies carrying it
	for _, u := range users {
		recs := inboxes[u]
		ids[u], acks[u] = map[key]map[string]bool{}, map[string]int{}
		first := map[string]int{}
		var dups, strangers []string
		for i, r := range recs {
			if r.from != u && r.to != u {
				strangers = append(strangers, r.id)
			}
			if r.ref != "" {
				if r.from == u {
					acks[u][r.ref]++
				} else {
					problems = append(problems, fmt.Sprintf("%s: DM %s from %s carries ref %s", u, r.id, r.from, r.ref))
				}
			}
			if j, ok := first[r.id]; ok {
				p := recs[j]
				switch {
				case p.from != r.from || p.to != r.to || p.text != r.text:
					problems = append(problems, fmt.Sprintf("%s: id %s is %q from %s to %s, and was %q from %s to %s",
						u, r.id, r.text, r.from, r.to, p.text, p.from, p.to))
				case r.ref != "":
					// The ack of a retry: counted above.
				case r.hist && !p.hist && p.conn == r.conn:
					overlaps++
				default:
					dups = append(dups, r.id)
				}
				continue
			}
			first[r.id] = i
			k := key{r.from, r.text}
			if ids[u][k] == nil {
				ids[u][k] = map[string]bool{}
			}
			ids[u][k][r.id] = true
		}
		if len(strangers) > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d DMs neither from nor to it, e.g. %v", u, len(strangers), limit(strangers, 5)))
		}
		if len(dups) > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d DM ids delivered more than once, e.g. %v", u, len(dups), limit(dups, 5)))
		}
		keys := make([]key, 0, len(ids[u]))
		for k := range ids[u] {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.from, b.from), cmp.Compare(a.text, b.text)) })
		for _, k := range keys {
			if set := ids[u][k]; len(set) > 1 {
				list := make([]string, 0, len(set))
				for id := range set {
					list = append(list, id)
				}
				slices.Sort(list)
				problems = append(problems, fmt.Sprintf("%s: DM %q from %s stored %d times, ids %v", u, k.text, k.from, len(set), list))
			}
		}
	}

	sent = slices.Clone(sent)
	slices.SortFunc(sent, func(a, b dmSent) int { return cmp.Or(cmp.Compare(a.from, b.from), cmp.Compare(a.ref, b.ref)) })
	known := map[string]map[key]bool{}
	var missing []string
	for _, d := range sent {
		k := key{d.from, d.text}
		for _, u := range []string{d.to, d.from} {
			if known[u] == nil {
				known[u] = map[key]bool{}
			}
			known[u][k] = true
		}
		if len(ids[d.to][k]) == 0 {
			missing = append(missing, fmt.Sprintf("%s->%s %s", d.from, d.to, d.ref))
		} else if !ids[d.to][k][d.id] {
			problems = append(problems, fmt.Sprintf("%s: its copy of DM %s from %s has not the acknowledged id %s", d.to, d.ref, d.from, d.id))
		}
		if !ids[d.from][k][d.id] {
			problems = append(problems, fmt.Sprintf("%s: its copy %s of DM %s is not in its inbox", d.from, d.id, d.ref))
		}
		if n := acks[d.from][d.ref]; n == 0 || n > max(d.tx, 1) {
			problems = append(problems, fmt.Sprintf("%s: DM %s acknowledged %d times for %d transmissions", d.from, d.ref, n, d.tx))
		}
	}
	if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d acknowledged DMs missing at their recipient, e.g. %v", len(missing), len(sent), limit(missing, 5)))
	}
	for _, u := range users {
		var extra []string
		for k := range ids[u] {
			if !known[u][k] {
				extra = append(extra, k.from+":"+k.text)
			}
		}
		if len(extra) > 0 {
			slices.Sort(extra)
			problems = append(problems, fmt.Sprintf("%s: %d DMs were never acknowledged, e.g. %v", u, len(extra), limit(extra, 5)))
		}
	}
	return problems, overlaps
}

func TestChaosCheckDMs(t *testing.T) {
	// a sends "dm a-d1" to b: one id, a1, on b's copy and on a's (the ack).
	sent := []dmSent{{from: "a", to: "b", ref: "a-d1", text: "dm a-d1", id: "a1", tx: 1}}
	ack := chaosDMRec{id: "a1", from: "a", to: "b", text: "dm a-d1", ref: "a-d1", conn: 1}
	own := chaosDMRec{id: "a1", from: "a", to: "b", text: "dm a-d1", conn: 2, hist: true} // a's copy in a later dm_history
	got := chaosDMRec{id: "a1", from: "a", to: "b", text: "dm a-d1", conn: 1}
	at := func(r chaosDMRec, conn int, hist bool) chaosDMRec { r.conn, r.hist = conn, hist; return r }
	withID := func(r chaosDMRec, id string) chaosDMRec { r.id = id; return r }
	withTx := func(d dmSent, tx int) []dmSent { d.tx = tx; return []dmSent{d} }
	recs := func(r ...chaosDMRec) []chaosDMRec { return r }
	tests := []struct {
		name     string
		sent     []dmSent
		inboxes  map[string][]chaosDMRec
		want     []string // substrings, one per problem
		overlaps int
	}{
		{"delivered", sent, map[string][]chaosDMRec{"a": recs(ack), "b": recs(got)}, nil, 0},
		{"nothing sent", nil, map[string][]chaosDMRec{"a": nil, "b": nil}, nil, 0},
		{"resumed history repeats own copy and re-acks", withTx(sent[0], 2),
			map[string][]chaosDMRec{"a": recs(own, at(ack, 2, false)), "b": recs(got)}, nil, 0},
		{"history repeats a live DM of the same connection", sent,
			map[string][]chaosDMRec{"a": recs(ack), "b": recs(got, at(got, 1, true))}, nil, 1},
		{"missing at the recipient", sent, map[string][]chaosDMRec{"a": recs(ack), "b": nil},
			[]string{"1 of 1 acknowledged DMs missing at their recipient, e.g. [a->b a-d1]"}, 0},
		{"recipient inbox unknown", sent, map[string][]chaosDMRec{"a": recs(ack)},
			[]string{"1 of 1 acknowledged DMs missing"}, 0},
		{"stored twice", sent, map[string][]chaosDMRec{"a": recs(ack), "b": recs(got, withID(got, "b2"))},
			[]string{`b: DM "dm a-d1" from a stored 2 times, ids [a1 b2]`}, 0},
		{"live twice", sent, map[string][]chaosDMRec{"a": recs(ack), "b": recs(got, got)},
			[]string{"b: 1 DM ids delivered more than once, e.g. [a1]"}, 0},
		{"resume repeats a DM of the previous connection", sent,
			map[string][]chaosDMRec{"a": recs(ack), "b": recs(got, at(got, 2, true))},
			[]string{"b: 1 DM ids delivered more than once"}, 0},
		{"live after history", sent,
			map[string][]chaosDMRec{"a": recs(ack), "b": recs(at(got, 1, true), got)},
			[]string{"b: 1 DM ids delivered more than once"}, 0},
		{"acked twice for one transmission", sent, map[string][]chaosDMRec{"a": recs(ack, ack), "b": recs(got)},
			[]string{"a: DM a-d1 acknowledged 2 times for 1 transmissions"}, 0},
		{"acked twice for two transmissions", withTx(sent[0], 2), map[string][]chaosDMRec{"a": recs(ack, ack), "b": recs(got)}, nil, 0},
		{"ack never seen", sent, map[string][]chaosDMRec{"a": recs(at(own, 1, false)), "b": recs(got)},
			[]string{"a: DM a-d1 acknowledged 0 times"}, 0},
		{"own copy under another id", sent, map[string][]chaosDMRec{"a": recs(withID(ack, "a9")), "b": recs(got)},
			[]string{"a: its copy a1 of DM a-d1 is not in its inbox"}, 0},
		{"recipient's copy under another id", sent, map[string][]chaosDMRec{"a": recs(ack), "b": recs(withID(got, "b1"))},
			[]string{"b: its copy of DM a-d1 from a has not the acknowledged id a1"}, 0},
		{"never acknowledged", nil, map[string][]chaosDMRec{"a": nil, "b": recs(got)},
			[]string{"b: 1 DMs were never acknowledged, e.g. [a:dm a-d1]"}, 0},
		{"same id, other content", sent,
			map[string][]chaosDMRec{"a": recs(ack), "b": recs(got, chaosDMRec{id: "a1", from: "a", to: "b", text: "dm other", conn: 1})},
			[]string{`b: id a1 is "dm other" from a to b, and was "dm a-d1"`}, 0},
		{"ref on a received copy", sent, map[string][]chaosDMRec{"a": recs(ack), "b": recs(withRef(got, "a-d1"))},
			[]string{"b: DM a1 from a carries ref a-d1"}, 0},
		{"someone else's DM", sent, map[string][]chaosDMRec{"a": recs(ack), "b": recs(got), "c": recs(got)},
			[]string{"c: 1 DMs neither from nor to it", "c: 1 DMs were never acknowledged"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, overlaps := checkDMs(tt.sent, tt.inboxes)
			if overlaps != tt.overlaps {
				t.Errorf("overlaps = %d, want %d", overlaps, tt.overlaps)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("problems %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func withRef(r chaosDMRec, ref string) chaosDMRec { r.ref = ref; return r }
