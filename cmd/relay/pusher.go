package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/relayhq/relay/internal/protocol/pusher"
)

// pusherSettings are the settings of the Pusher protocol: one app from
// flags or variables (what Laravel's and Soketi's users set), and more from
// a file, each with its own options.
type pusherSettings struct {
	AppID, AppKey, AppSecret string
	AppsFile                 string
	ClientEvents             bool
	SubscriptionCount        bool
	WebhookURL               string
	Bridge                   bool
	PathPrefix               string
}

func pusherOptions(p *pusherSettings) []option {
	return []option{
		{"pusher-app-id", "RELAY_PUSHER_APP_ID", "", "Pusher protocol: the app id of the one app set by flags (with -pusher-app-key and -pusher-app-secret); off when no app is set", (*strValue)(&p.AppID), false},
		{"pusher-app-key", "RELAY_PUSHER_APP_KEY", "", "Pusher protocol: that app's key (clients connect to /app/KEY)", (*strValue)(&p.AppKey), false},
		{"pusher-app-secret", "RELAY_PUSHER_APP_SECRET", "", "Pusher protocol: that app's secret (16+ characters), signing its HTTP API calls and channel authorizations", (*strValue)(&p.AppSecret), true},
		{"pusher-client-events", "RELAY_PUSHER_CLIENT_EVENTS", "false", "Pusher protocol: let that app's clients send client-* events on private and presence channels (Laravel Echo's whisper)", (*boolValue)(&p.ClientEvents), false},
		{"pusher-subscription-count", "RELAY_PUSHER_SUBSCRIPTION_COUNT", "false", "Pusher protocol: offer the subscription_count attribute for that app's channels", (*boolValue)(&p.SubscriptionCount), false},
		{"pusher-webhook-url", "RELAY_PUSHER_WEBHOOK_URL", "", "Pusher protocol: URL that receives that app's webhooks", (*strValue)(&p.WebhookURL), false},
		{"pusher-bridge", "RELAY_PUSHER_BRIDGE", "false", "Pusher protocol: let seed and relay.v1 clients read that app's public channels as the Relay topics pusher/APP_ID/CHANNEL", (*boolValue)(&p.Bridge), false},
		{"pusher-apps-file", "RELAY_PUSHER_APPS_FILE", "", "Pusher protocol: YAML file of apps (apps: [{id, key, secret, client_events, webhook_url, activity_timeout, ...}]), for several apps or per-app options; see docs/pusher.md", (*strValue)(&p.AppsFile), false},
		{"pusher-path-prefix", "RELAY_PUSHER_PATH_PREFIX", "", "Pusher protocol: path prefix a proxy serves /app and /apps under (e.g. /pusher), stripped before routing and signature checks", (*strValue)(&p.PathPrefix), false},
	}
}

// apps builds the Pusher apps from the settings; nil when there are none.
// Errors name the setting.
func (p *pusherSettings) apps() (*pusher.Apps, error) {
	var list []pusher.App
	set := p.AppID != "" || p.AppKey != "" || p.AppSecret != ""
	if set {
		if p.AppID == "" || p.AppKey == "" || p.AppSecret == "" {
			return nil, fmt.Errorf("-pusher-app-id / RELAY_PUSHER_APP_ID, -pusher-app-key / RELAY_PUSHER_APP_KEY and -pusher-app-secret / RELAY_PUSHER_APP_SECRET go together")
		}
		list = append(list, pusher.App{Credentials: pusher.Credentials{ID: p.AppID, Key: p.AppKey, Secret: p.AppSecret},
			ClientEvents: p.ClientEvents, SubscriptionCount: p.SubscriptionCount, WebhookURL: p.WebhookURL, Bridge: p.Bridge})
	} else if p.ClientEvents || p.SubscriptionCount || p.WebhookURL != "" || p.Bridge {
		return nil, fmt.Errorf("-pusher-client-events, -pusher-subscription-count, -pusher-webhook-url and -pusher-bridge apply to the app of -pusher-app-id / RELAY_PUSHER_APP_ID, which is not set (per-app options of the apps file go in the file)")
	}
	if p.AppsFile != "" {
		b, err := os.ReadFile(p.AppsFile)
		if err != nil {
			return nil, fmt.Errorf("-pusher-apps-file / RELAY_PUSHER_APPS_FILE: %v", err)
		}
		more, err := pusher.ParseApps(b)
		if err != nil {
			return nil, fmt.Errorf("-pusher-apps-file / RELAY_PUSHER_APPS_FILE %s: %v", p.AppsFile, err)
		}
		list = append(list, more...)
	}
	if p.PathPrefix != "" && (!strings.HasPrefix(p.PathPrefix, "/") || strings.HasSuffix(p.PathPrefix, "/")) {
		return nil, fmt.Errorf("-pusher-path-prefix / RELAY_PUSHER_PATH_PREFIX %q must start with / and not end with one, e.g. /pusher", p.PathPrefix)
	}
	if len(list) == 0 {
		return nil, nil
	}
	apps, err := pusher.NewApps(list)
	if err != nil {
		return nil, fmt.Errorf("pusher apps (RELAY_PUSHER_*): %v", err)
	}
	return apps, nil
}
