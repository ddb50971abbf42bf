package transport

import (
	"fmt"
	"time"
)

// FillRetention validates the retention settings every broker and history
// log takes, and fills the defaults of the zero values: size
// DefaultHistorySize, dedupe DefaultDedupeWindow (maxAge 0 stays "no age
// limit"). Errors name component, e.g. "redis broker".
func FillRetention(component string, size *int, maxAge, dedupe *time.Duration) error {
	switch {
	case *size < 0:
		return fmt.Errorf("%s: negative HistorySize %d", component, *size)
	case *maxAge < 0:
		return fmt.Errorf("%s: negative HistoryMaxAge %v", component, *maxAge)
	case *dedupe < 0:
		return fmt.Errorf("%s: negative DedupeWindow %v", component, *dedupe)
	}
	if *size == 0 {
		*size = DefaultHistorySize
	}
	if *dedupe == 0 {
		*dedupe = DefaultDedupeWindow
	}
	return nil
}
