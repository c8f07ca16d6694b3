package resp

import (
	"log/slog"
	"strings"
)

// levelNothing is the level CONFIG SET loglevel nothing selects: above every
// level Herald logs at.
const levelNothing = slog.LevelError + 4

// parseLogLevel reads a log level in Redis's words (debug, verbose, notice,
// warning, nothing) or slog's (debug, info, warn, error). Redis's verbose and
// notice are both slog's Info: Herald has no level between Debug and Info.
func parseLogLevel(v string) (slog.Level, bool) {
	switch strings.ToLower(v) {
	case "debug":
		return slog.LevelDebug, true
	case "verbose", "notice", "info":
		return slog.LevelInfo, true
	case "warning", "warn":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	case "nothing":
		return levelNothing, true
	}
	return 0, false
}

// logLevelName names l in Redis's words where one fits: debug, notice,
// warning, nothing; and error for slog's Error.
func logLevelName(l slog.Level) string {
	switch {
	case l <= slog.LevelDebug:
		return "debug"
	case l <= slog.LevelInfo:
		return "notice"
	case l <= slog.LevelWarn:
		return "warning"
	case l <= slog.LevelError:
		return "error"
	}
	return "nothing"
}
