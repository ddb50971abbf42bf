package webtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
)

// SignJWT makes a JWT with header {"alg":alg,"typ":"JWT"} and claims,
// signed by sign (which gets the "header.payload" bytes), as an app that
// logs its users in to meshchat (--auth jwt) would.
func SignJWT(alg string, claims map[string]any, sign func(signed []byte) []byte) string {
	h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	p, _ := json.Marshal(claims)
	s := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	return s + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(s)))
}

// SignHS256 is SignJWT with HMAC-SHA256 under key.
func SignHS256(key []byte, claims map[string]any) string {
	return SignJWT("HS256", claims, func(signed []byte) []byte {
		mac := hmac.New(sha256.New, key)
		mac.Write(signed)
		return mac.Sum(nil)
	})
}
