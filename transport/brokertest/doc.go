// Package brokertest is the conformance suite every transport.Broker
// passes, and a publish-to-delivery benchmark shared by broker tests.
// (The goroutine leak checks are in cluster/clustertest.)
//
// A broker's test file feeds Run a Factory that builds n unstarted
// brokers forming ONE cluster (n nodes that see each other's publications,
// history and presence), configured with HistorySize = brokertest.HistorySize
// and a dedupe window of at least one minute, and registers their cleanup:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T, n int) []transport.Broker { ... })
//	}
//
// The suite starts the brokers itself, each with a recording handler, and
// uses fresh channel names in every subtest, so a factory may reuse a
// backing service (one redis-server for the whole run).
//
// The suite never sleeps for a fixed time: it polls conditions with a
// deadline. To show that something was NOT delivered it publishes a marker
// on a second channel afterwards and waits for the marker; that catches
// every broker that delivers one node's traffic in the order it was sent.
package brokertest
