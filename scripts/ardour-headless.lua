-- Staria in Ardour 7, headless: run by scripts/ardour-headless.sh through ardour7-lua (luasession).
-- Dummy backend, 48 kHz, Ardour's default tempo map (120 bpm, 4/4: a bar is 2 s = 96000 samples).
-- Track "Staria": [Staria test phrase (Lua DSP, plays 8 quarter notes in bars 2-3)] -> [Staria.vst3].
-- Track "Capture": input connected to the Staria track's MIDI output, armed, records everything.
-- Record A is on from the start and switched off at 6.3 s; Play section (section A, next bar) is
-- pulsed at 6.6 s; the transport stops at STOP_S. Then the Capture track's recorded region is read.

local dir = assert (os.getenv ("STARIA_ARDOUR_SESSION"), "STARIA_ARDOUR_SESSION unset")
local STOP_S = tonumber (os.getenv ("STARIA_ARDOUR_STOP_S") or "20")
local SEED = tonumber (os.getenv ("STARIA_ARDOUR_SEED") or "1")
local RATE = 48000

assert (AudioEngine:set_backend ("None (Dummy)", "", ""), "no Dummy backend")
local s = create_session (dir, "staria", RATE)
assert (s, "create_session failed")
print ("backend:", AudioEngine:current_backend_name (), "rate:", Session:nominal_sample_rate ())

local midi = ARDOUR.DataType ("midi")
local function midi_track (name)
	local tl = Session:new_midi_track (ARDOUR.ChanCount (midi, 1), ARDOUR.ChanCount (midi, 1), false,
		ARDOUR.PluginInfo (), nil, nil, 1, name, ARDOUR.PresentationInfo.max_order,
		ARDOUR.TrackMode.Normal, true, false)
	assert (tl:size () == 1, "new_midi_track failed")
	return tl:front ()
end

local t1 = midi_track ("Staria")
local staria = ARDOUR.LuaAPI.new_plugin (Session, "Staria", ARDOUR.PluginType.VST3, "")
assert (not staria:isnil (), "Staria.vst3 not found (is it in ~/.vst3 and scanned?)")
assert (t1:add_processor_by_index (staria, 0, nil, true) == 0, "adding Staria failed")
local phrase = ARDOUR.LuaAPI.new_plugin (Session, "Staria test phrase", ARDOUR.PluginType.Lua, "")
assert (not phrase:isnil (), "the Lua phrase player was not found")
assert (t1:add_processor_by_index (phrase, 0, nil, true) == 0, "adding the phrase player failed")

local i = 0
while true do
	local p = t1:nth_processor (i)
	if p:isnil () then break end
	print ("processor " .. i .. ":", p:display_name ())
	i = i + 1
end

-- Staria's parameters by name (nice-plug's VST3 wrapper also exposes 2080 hidden MIDI-CC ones).
local pi = staria:to_insert ()
local plug = pi:plugin (0)
local param = {}
local shown = 0
for k = 0, plug:parameter_count () - 1 do
	local label = plug:parameter_label (k)
	if label ~= "hidden" then
		param[label] = k
		shown = shown + 1
	end
end
print ("Staria parameters:", plug:parameter_count (), "of which not hidden:", shown)
local function set (name, v)
	local k = assert (param[name], "no parameter " .. name)
	assert (ARDOUR.LuaAPI.set_plugin_insert_param (pi, k, v), "setting " .. name .. " failed")
end
local function get (name)
	local v = ARDOUR.LuaAPI.get_plugin_insert_param (pi, param[name])
	return v
end

set ("Section to generate", 0) -- A
set ("Play immediately", 0)    -- from the next bar line
set ("Bars to generate", 4)
set ("Seed (0 = random)", SEED)
for _, n in ipairs ({ "Record A", "Section to generate", "Play section", "Play immediately",
	"Bars to generate", "Seed (0 = random)", "Output channel", "Pass input through" }) do
	print ("param", n, "=", get (n))
end

-- The capture track records what the Staria track sends out.
local t2 = midi_track ("Capture")
t2:input ():disconnect_all (nil)
local src = t1:output ():midi (0):name ()
assert (t2:input ():midi (0):connect (src) == 0, "connecting the capture track failed")
print ("Capture input <-", src, "connected:", t2:input ():midi (0):connected_to (src))
t2:rec_enable_control ():set_value (1, PBD.GroupControlDisposition.NoGroup)
Session:maybe_enable_record (false)

-- Give the plugin a moment to load its model (it starts when the plugin is activated).
ARDOUR.LuaAPI.usleep (3000000)

set ("Record A", 1)
ARDOUR.LuaAPI.usleep (200000)
Session:request_roll (ARDOUR.TransportRequestSource.TRS_UI)
local state = 0
local last = -1
while true do
	ARDOUR.LuaAPI.usleep (50000)
	local t = Session:transport_sample () / RATE
	if math.floor (t) ~= last then
		last = math.floor (t)
		print (string.format ("t=%5.2f s rolling=%s recording=%s", t, tostring (Session:transport_rolling ()), tostring (Session:actively_recording ())))
	end
	if state == 0 and t >= 6.3 then set ("Record A", 0); state = 1; print (string.format ("%.2f s: Record A off", t)) end
	if state == 1 and t >= 6.6 then set ("Play section", 1); state = 2; print (string.format ("%.2f s: Play section on", t)) end
	if state == 2 and t >= 7.0 then set ("Play section", 0); state = 3; print (string.format ("%.2f s: Play section off", t)) end
	if t >= STOP_S then break end
end
Session:request_stop (false, false, ARDOUR.TransportRequestSource.TRS_UI)
ARDOUR.LuaAPI.usleep (2000000)
print ("stopped at", Session:transport_sample () / RATE, "s; rolling:", Session:transport_rolling ())
Session:disable_record (false, false)
t2:rec_enable_control ():set_value (0, PBD.GroupControlDisposition.NoGroup)
ARDOUR.LuaAPI.usleep (500000)

-- Note times are quarter notes (beat:tick, 1920 ticks a beat) from the region start (0 s); at
-- 120 bpm a beat is 0.5 s, so bar n (1-based) starts at beat 4 (n - 1).
local function beats (b) -- Temporal::Beats prints as "beats:ticks"
	local q, t = string.match (tostring (b), "^(-?%d+):(%d+)$")
	return tonumber (q) + tonumber (t) / 1920
end
local regions = 0
local count = {}
local first_gen, last_gen_end
for r in t2:playlist ():region_list ():iter () do
	regions = regions + 1
	local mr = r:to_midiregion ()
	print ("recorded region:", r:name (), "position", r:position (), "length", r:length ())
	for n in ARDOUR.LuaAPI.note_list (mr:model ()):iter () do
		local ch = n:channel () + 1
		count[ch] = (count[ch] or 0) + 1
		local on = beats (n:time ())
		local off = on + beats (n:length ())
		if ch == 2 then
			first_gen = math.min (first_gen or on, on)
			last_gen_end = math.max (last_gen_end or off, off)
		end
		print (string.format ("  note ch %d key %3d vel %3d at beat %6.3f (%6.3f s) to beat %6.3f", ch, n:note (), n:velocity (), on, on / 2, off))
	end
end
print ("recorded regions:", regions)
for ch, c in pairs (count) do print ("notes recorded on channel " .. ch .. ":", c) end
if first_gen then
	print (string.format ("generated notes span beats %.3f .. %.3f (bar %d .. end of bar %d)",
		first_gen, last_gen_end, math.floor (first_gen / 4) + 1, math.ceil (last_gen_end / 4)))
end

Session:save_state ("", false, false, false, false, false)
close_session ()
