package client

import "github.com/twinflow/twinflow/runtime/frontdoor"

// SetWriterWrapper makes the clients made afterwards wrap their writer
// with wrap; nil for none.
func SetWriterWrapper(wrap func(frontdoor.Writer) frontdoor.Writer) { wrapWriter = wrap }
