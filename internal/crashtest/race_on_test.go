//go:build race

package crashtest

// raceEnabled says the tests run with the race detector; the runtime binary
// is then built with it too.
const raceEnabled = true
