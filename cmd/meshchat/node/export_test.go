package node

// PeerTLSConfig lets the external tests check how mesh links verify
// their peers' certificates.
var PeerTLSConfig = peerTLSConfig
