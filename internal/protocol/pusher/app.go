package pusher

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// App is one Pusher app: the credentials its clients and backend sign with,
// and its options. Limits of 0 take the defaults (Pusher's own limits).
type App struct {
	Credentials
	// ClientEvents lets signed-in members of private and presence
	// channels send client-* events to each other (off, as on Pusher).
	ClientEvents bool
	// SubscriptionCount sends pusher_internal:subscription_count to the
	// subscribers of public and private channels when their number changes,
	// and offers the subscription_count attribute (off, as on Pusher).
	SubscriptionCount bool
	// WebhookURL receives the app's webhooks; empty: none.
	WebhookURL string
	// Bridge lets seed and relay.v1 clients read the app's public
	// channels: each event on a public channel C is also published to the
	// Relay topic pusher/{app id}/C, as the frame pusher-js would get.
	// Private, presence, encrypted and user channels are never bridged.
	Bridge bool
	// ActivityTimeout is what connection_established tells clients: how
	// long a client waits without hearing from the server before it pings.
	ActivityTimeout time.Duration
	// MaxPresenceMembers bounds the members of a presence channel.
	MaxPresenceMembers int
	// MaxMemberInfo bounds a member's user_info, in bytes.
	MaxMemberInfo int
	// MaxEventData bounds an event's data, in bytes (client and server).
	MaxEventData int
	// MaxTriggerChannels bounds the channels of one trigger.
	MaxTriggerChannels int
	// MaxBatch bounds the events of one batch trigger.
	MaxBatch int
	// ClientEventRate is how many client events a connection may send per
	// second; past it they are refused with pusher:error 4301.
	ClientEventRate int
}

// Defaults of the app options (Pusher's limits).
const (
	DefaultActivityTimeout    = 120 * time.Second
	DefaultMaxPresenceMembers = 100
	DefaultMaxMemberInfo      = 1 << 10
	DefaultMaxEventData       = 10 << 10
	DefaultMaxTriggerChannels = 100
	DefaultMaxBatch           = 10
	DefaultClientEventRate    = 10
	// MaxAppIDLength keeps a channel's topic, *pusher/{id}/{channel},
	// within 256 bytes.
	MaxAppIDLength = 64
)

// maxMemberInfo is the most member info the engines keep (Redis and NATS
// drop larger ones); a user_info is a little smaller than its member info.
const maxMemberInfo = 60 << 10

// WithDefaults returns a with every unset option at its default.
func (a App) WithDefaults() App {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if a.ActivityTimeout == 0 {
		a.ActivityTimeout = DefaultActivityTimeout
	}
	def(&a.MaxPresenceMembers, DefaultMaxPresenceMembers)
	def(&a.MaxMemberInfo, DefaultMaxMemberInfo)
	def(&a.MaxEventData, DefaultMaxEventData)
	def(&a.MaxTriggerChannels, DefaultMaxTriggerChannels)
	def(&a.MaxBatch, DefaultMaxBatch)
	def(&a.ClientEventRate, DefaultClientEventRate)
	return a
}

var appIDChars = regexp.MustCompile(`^[A-Za-z0-9_\-=@,.;]+$`)

// Check reports what is wrong with a, naming the field.
func (a App) Check() error {
	switch {
	case a.ID == "":
		return errors.New("id is required")
	case len(a.ID) > MaxAppIDLength || !appIDChars.MatchString(a.ID):
		return fmt.Errorf("id %q must be 1 to %d characters of A-Z a-z 0-9 _ - = @ , . ;", a.ID, MaxAppIDLength)
	case a.Key == "":
		return fmt.Errorf("app %s: key is required", a.ID)
	case strings.ContainsAny(a.Key, ":/?#& \t\n"):
		return fmt.Errorf("app %s: key %q must not contain : / ? # & or white space", a.ID, a.Key)
	case len(a.Secret) < 16:
		return fmt.Errorf("app %s: secret must be at least 16 characters (generate one with openssl rand -hex 20)", a.ID)
	case a.ActivityTimeout < 0 || a.ActivityTimeout%time.Second != 0:
		return fmt.Errorf("app %s: activity_timeout %v must be a whole number of seconds (pusher-js refuses fractions and 0)", a.ID, a.ActivityTimeout)
	case a.MaxMemberInfo > maxMemberInfo:
		return fmt.Errorf("app %s: max_member_info must be at most %d bytes (the engines keep no larger member info)", a.ID, maxMemberInfo)
	case a.MaxPresenceMembers < 0 || a.MaxMemberInfo < 0 || a.MaxEventData < 0 || a.MaxTriggerChannels < 0 || a.MaxBatch < 0 || a.ClientEventRate < 0:
		return fmt.Errorf("app %s: limits must not be negative", a.ID)
	}
	if a.WebhookURL != "" {
		u, err := url.Parse(a.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("app %s: webhook_url %q must be an http:// or https:// URL", a.ID, a.WebhookURL)
		}
	}
	return nil
}

// Apps are the apps a node serves, found by id (the HTTP API) and by key
// (sockets, and the auth_key of signed requests).
type Apps struct {
	list  []*App
	byID  map[string]*App
	byKey map[string]*App
}

// NewApps checks every app, fills in the defaults, and refuses two apps
// with one id or one key.
func NewApps(apps []App) (*Apps, error) {
	s := &Apps{byID: map[string]*App{}, byKey: map[string]*App{}}
	for _, a := range apps {
		if err := a.Check(); err != nil {
			return nil, err
		}
		a := a.WithDefaults()
		if _, dup := s.byID[a.ID]; dup {
			return nil, fmt.Errorf("two apps have the id %q", a.ID)
		}
		if _, dup := s.byKey[a.Key]; dup {
			return nil, fmt.Errorf("two apps have the key %q", a.Key)
		}
		s.list = append(s.list, &a)
		s.byID[a.ID], s.byKey[a.Key] = &a, &a
	}
	return s, nil
}

// Len is the number of apps; an Apps of none serves no Pusher routes.
func (s *Apps) Len() int {
	if s == nil {
		return 0
	}
	return len(s.list)
}

// ByID returns the app with id.
func (s *Apps) ByID(id string) (*App, bool) {
	if s == nil {
		return nil, false
	}
	a, ok := s.byID[id]
	return a, ok
}

// ByKey returns the app with key.
func (s *Apps) ByKey(key string) (*App, bool) {
	if s == nil {
		return nil, false
	}
	a, ok := s.byKey[key]
	return a, ok
}

// Lookup is a KeyLookup over every app.
func (s *Apps) Lookup(key string) (Credentials, bool) {
	a, ok := s.ByKey(key)
	if !ok {
		return Credentials{}, false
	}
	return a.Credentials, true
}

// All returns the apps, in the order given.
func (s *Apps) All() []*App {
	if s == nil {
		return nil
	}
	return s.list
}

// appFile is the apps file: YAML (or JSON, which YAML reads too).
type appFile struct {
	Apps []appEntry `yaml:"apps"`
}

type appEntry struct {
	ID                 string  `yaml:"id"`
	Key                string  `yaml:"key"`
	Secret             string  `yaml:"secret"`
	ClientEvents       bool    `yaml:"client_events"`
	SubscriptionCount  bool    `yaml:"subscription_count"`
	WebhookURL         string  `yaml:"webhook_url"`
	Bridge             bool    `yaml:"bridge"`
	ActivityTimeout    seconds `yaml:"activity_timeout"`
	MaxPresenceMembers int     `yaml:"max_presence_members"`
	MaxMemberInfo      size    `yaml:"max_member_info"`
	MaxEventData       size    `yaml:"max_event_data"`
	MaxTriggerChannels int     `yaml:"max_channels_per_trigger"`
	MaxBatch           int     `yaml:"max_batch_events"`
	ClientEventRate    int     `yaml:"client_event_rate"`
}

// seconds reads a whole number of seconds (120) or a duration ("2m").
type seconds time.Duration

func (s *seconds) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: activity_timeout must be seconds (120) or a duration (2m)", n.Line)
	}
	if v, err := strconv.Atoi(n.Value); err == nil {
		*s = seconds(time.Duration(v) * time.Second)
		return nil
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: activity_timeout %q must be seconds (120) or a duration (2m)", n.Line, n.Value)
	}
	*s = seconds(d)
	return nil
}

// size reads bytes (1024) or a size with a suffix (1KiB, 10KB: both 1024-based).
type size int

func (z *size) UnmarshalYAML(n *yaml.Node) error {
	v := strings.TrimSpace(n.Value)
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"kib", 1 << 10}, {"kb", 1 << 10}, {"k", 1 << 10}, {"mib", 1 << 20}, {"mb", 1 << 20}, {"m", 1 << 20}, {"b", 1}} {
		if l := strings.ToLower(v); strings.HasSuffix(l, u.suffix) {
			v, mult = strings.TrimSpace(v[:len(v)-len(u.suffix)]), u.mult
			break
		}
	}
	i, err := strconv.Atoi(v)
	if n.Kind != yaml.ScalarNode || err != nil || i < 0 {
		return fmt.Errorf("line %d: %q must be a size in bytes (1024, 10KiB)", n.Line, n.Value)
	}
	*z = size(i * mult)
	return nil
}

// ParseApps reads an apps file. Unknown keys are refused with their line,
// so that a misspelt option is not silently ignored.
func ParseApps(data []byte) ([]App, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f appFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s (keys: id, key, secret, client_events, subscription_count, webhook_url, bridge, activity_timeout, max_presence_members, max_member_info, max_event_data, max_channels_per_trigger, max_batch_events, client_event_rate under apps:)", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(f.Apps) == 0 {
		return nil, errors.New("no apps: the file must have a list under apps:, each with id, key and secret")
	}
	apps := make([]App, 0, len(f.Apps))
	for _, e := range f.Apps {
		apps = append(apps, App{
			Credentials:        Credentials{ID: e.ID, Key: e.Key, Secret: e.Secret},
			ClientEvents:       e.ClientEvents,
			SubscriptionCount:  e.SubscriptionCount,
			WebhookURL:         e.WebhookURL,
			Bridge:             e.Bridge,
			ActivityTimeout:    time.Duration(e.ActivityTimeout),
			MaxPresenceMembers: e.MaxPresenceMembers,
			MaxMemberInfo:      int(e.MaxMemberInfo),
			MaxEventData:       int(e.MaxEventData),
			MaxTriggerChannels: e.MaxTriggerChannels,
			MaxBatch:           e.MaxBatch,
			ClientEventRate:    e.ClientEventRate,
		})
	}
	return apps, nil
}
