-- Lua DSP for scripts/ardour-headless.sh: plays 8 quarter notes (C4 E4 G4 C5 B4 G4 E4 D4, velocity 100, channel 1)
-- in bars 2-3 of a 120 bpm 4/4 transport (2 s .. 6 s), sample-accurately, whenever the transport rolls
-- over them; MIDI input passes through. Installed into the run's ~/.config/ardour7/scripts/.
ardour { ["type"] = "dsp", name = "Staria test phrase", category = "Utility", license = "MIT", author = "Staria", description = [[Plays a fixed phrase at fixed transport positions]] }
function dsp_ioconfig () return { { midi_in = 1, midi_out = 1, audio_in = 0, audio_out = 0 }, } end
local ev = {}
function dsp_init (rate)
  local q = rate / 2 -- a quarter note at 120 bpm
  local notes = { 60, 64, 67, 72, 71, 67, 64, 62 }
  for i, n in ipairs (notes) do
    local on = 4 * q + (i - 1) * q -- from bar 2 (1-based, 2 s) on, a quarter note (0.5 s) apart
    ev[#ev + 1] = { on, { 0x90, n, 100 } }
    ev[#ev + 1] = { on + math.floor (q * 0.8), { 0x80, n, 0 } }
  end
end
function dsp_run (_, _, n_samples)
  local cnt = 1
  for _, b in pairs (midiin) do midiout[cnt] = b; cnt = cnt + 1 end
  if not Session:transport_rolling () then return end
  local pos = Session:transport_sample ()
  for _, e in ipairs (ev) do
    if e[1] >= pos and e[1] < pos + n_samples then
      midiout[cnt] = { time = e[1] - pos + 1, data = e[2] }
      cnt = cnt + 1
    end
  end
end
