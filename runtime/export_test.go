package runtime

import "github.com/twinflow/twinflow/runtime/frontdoor"

// SetDoorWriterWrapper makes the engines started afterwards wrap their
// front door's writer with wrap; nil for none.
func SetDoorWriterWrapper(wrap func(frontdoor.Writer) frontdoor.Writer) { wrapDoorWriter = wrap }
