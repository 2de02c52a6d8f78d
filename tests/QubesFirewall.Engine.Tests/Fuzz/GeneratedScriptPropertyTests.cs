using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using CsCheck;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Scripts;
using Xunit.Abstractions;

namespace QubesFirewall.Engine.Tests.Fuzz;

/// <summary>
/// No generated script carries an unvalidated character. Random port forwards (every field drawn
/// from its grammar, comments full of the characters the grammar allows such as <c>; / [ ]</c>, and
/// some invalid fields that must be refused) are planned and applied on a copy of the sample root;
/// every script and hook file that comes out (run scripts, managed blocks, Export-QubeFirewallScript's
/// text) is printable ASCII, keeps each user-supplied value in a place where the shell cannot act on it
/// (a comment line, single quotes, or the quoted nft here-document, inside nft's double quotes), and
/// passes <c>bash -n</c>. Managed blocks keep the user's own lines around them.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class GeneratedScriptPropertyTests(ITestOutputHelper output) : IDisposable
{
    private static readonly DateTimeOffset Now = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000);
    private readonly string _dir = Fuzz.NewDirectory("qfw-scripts-");

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    public sealed record ForwardInput(string VMName, ForwardProtocol Protocol, int Port, int? TargetPort, ForwardType Type, string[] AllowFrom, string? Interface, long? Expire, string? Comment, bool Force)
    {
        public override string ToString() =>
            $"{VMName} {Protocol} {Port}->{TargetPort} {Type} allow=[{string.Join(",", AllowFrom.Select(Fuzz.Show))}] iface={Fuzz.Show(Interface)} expire={Expire} comment={Fuzz.Show(Comment)} force={Force}";
    }

    // IPv4 networks mostly, IPv6 ones too (forwards over IPv6 where the root has IPv6 on, refused where it has not)
    private static readonly Gen<string> Network = Gen.Frequency(
        (4, from bytes in Gen.Byte.Array[4] from prefix in Gen.Int[0, 32] select Masked(bytes, prefix)),
        (1, from bytes in Gen.Byte.Array[16] from prefix in Gen.Int[0, 128] select Masked(bytes, prefix)));

    private static string Masked(byte[] bytes, int prefix)
    {
        var bits = bytes.Length * 8;
        for (var bit = prefix; bit < bits; bit++) bytes[bit / 8] &= (byte)~(0x80 >> (bit % 8));
        var ip = new IPAddress(bytes).ToString();
        return prefix == bits && bytes[^1] % 2 == 0 ? ip : ip + "/" + prefix.ToString(CultureInfo.InvariantCulture);
    }

    private static readonly Gen<string> Interface = Gen.OneOf(
        Gen.String[Gen.Char["abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"], 1, 15].Where(n => n is not ("." or ".." or "lo") && !n.StartsWith("vif", StringComparison.Ordinal)),
        Gen.Const("eth0"), Gen.Const("ens6"), Gen.Const("wlp0s0f0"), Gen.Const("tun0"), Gen.Const("wg-home.1"));

    private static readonly Gen<string> Comment =
        Gen.String[Gen.Char["abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 :;,./-_[]"], 1, 120]
            .Select(c => c.Trim()).Where(c => c.Length > 0);

    /// <summary>Mostly valid forwards; one field in eight is replaced by a payload that must be refused.</summary>
    private static readonly Gen<ForwardInput> Forward =
        from vm in Gen.Frequency(
            (6, Gen.OneOf(Gen.Const("work"), Gen.Const("personal"), Gen.Const("untrusted"), Gen.Const("sys-firewall"))),
            (1, Gen.OneOf(Gen.Const("vault"), Gen.Const("anon-whonix"), Gen.Const("default-dvm"), Gen.Const("sys-usb"), Gen.Const("nonexistent"))))
        from proto in Gen.Enum<ForwardProtocol>()
        from port in Gen.Int[1, 65535]
        from target in Gen.Int[0, 65535]
        from type in Gen.Enum<ForwardType>()
        from allow in Network.Array[0, 4]
        from hasIface in Gen.Int[0, 3]
        from iface in Interface
        from expireKind in Gen.Int[0, 12]
        from expire in Gen.Long[1, 100_000_000]
        from hasComment in Gen.Int[0, 3]
        from comment in Comment
        from force in Gen.Int[0, 3].Select(f => f != 0)
        from bad in Gen.Int[0, 40]
        from payload in Gens.Payload
        select new ForwardInput(
            bad == 0 ? vm + payload : vm,
            proto,
            bad == 1 ? -port : port,
            target == 0 ? null : target,
            type,
            bad == 2 ? [.. allow, "10.0.0.0/8" + payload] : bad == 3 ? [.. allow, "fd00::/64"] : allow,
            bad == 4 ? iface + payload : hasIface == 0 ? iface : null,
            expireKind switch { 0 => Now.ToUnixTimeSeconds() + expire, 1 => Now.ToUnixTimeSeconds() - expire, _ => null },
            bad == 5 ? comment + payload : hasComment != 0 ? comment : null,
            force);

    [Fact]
    public void Port_forward_scripts_and_hook_files_for_random_forwards_hold_only_validated_characters_and_pass_bash_n()
    {
        Directory.CreateDirectory(_dir);
        var scriptsDir = Path.Combine(_dir, "scripts");
        Directory.CreateDirectory(scriptsDir);
        var scripts = new List<(string Name, string Text)>();
        var comments = new HashSet<string>(StringComparer.Ordinal);
        var interfaces = new HashSet<string>(StringComparer.Ordinal);
        int created = 0, refusedInput = 0, refusedPlan = 0, applied = 0, traced = 0, ipv6Scripts = 0;
        var planRefusals = new SortedDictionary<string, int>(StringComparer.Ordinal);
        string? root = null;
        var iteration = 0;

        var startTicks = System.Diagnostics.Stopwatch.GetTimestamp();
        Fuzz.Check("port forward scripts: random forwards applied", Forward, 150, input =>
        {
            if (iteration++ % 10 == 0 || root is null)
            {
                root = Path.Combine(_dir, "root-" + iteration.ToString(CultureInfo.InvariantCulture));
                CopyDirectory(OfflineRootTests.SamplePath(), root);
                // every other root has IPv6 on from sys-net down, so the ip6 side of the scripts is generated too
                if (iteration % 20 == 1)
                    using (var setup = new OfflineRoot(root, () => Now)) setup.SetFeature("sys-net", "ipv6", "1");
                comments.Clear();
                interfaces.Clear();
            }
            var backend = new OfflineRoot(root, () => Now);
            PortForward forward;
            try
            {
                forward = PortForward.Create(input.VMName, input.Protocol, input.Port, input.TargetPort, input.Type, input.AllowFrom, input.Interface, input.Expire, input.Comment);
                created++;
            }
            catch (QubesFirewallException ex)
            {
                refusedInput++;
                Assert.False(string.IsNullOrWhiteSpace(ex.ErrorId));
                Assert.DoesNotContain(ex.Message, c => c is < ' ' or '\x7f'); // the input is echoed with control characters escaped
                return;
            }
            // What Create accepts is in the grammar; anything else must have been refused above.
            Assert.True(QubesFirewall.Engine.Validation.QubeName.IsValid(forward.VMName));
            if (forward.Comment is { } c) { Assert.True(c.All(RuleGrammar.IsCommentChar)); if (c.Length >= 10 && comments.Add(c)) traced++; }
            if (forward.Interface is { } i) { Assert.True(i.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '_' or '.' or '-')); if (i.Length >= 6 && interfaces.Add(i)) traced++; }

            PortForwardPlan plan;
            try
            {
                plan = PortForwardPlanner.PlanAdd(backend, forward, new DeploymentOptions { Now = Now });
            }
            catch (QubesFirewallException ex)
            {
                refusedPlan++;
                planRefusals[ex.ErrorId] = planRefusals.GetValueOrDefault(ex.ErrorId) + 1;
                Assert.False(string.IsNullOrWhiteSpace(ex.Message));
                return;
            }
            var result = PortForwardPlanner.Apply(backend, plan);
            Assert.Null(result.Failure);
            applied++;
            var produced = new List<(string Name, string Text)>();
            foreach (var step in plan.Steps)
            {
                if (step.Script is { } s) produced.Add(($"run-{scripts.Count + produced.Count}-{step.VMName}", s));
                if (step.PreviousScript is { } undo) produced.Add(($"undo-{scripts.Count + produced.Count}-{step.VMName}", undo));
                if (step.Content is { } content) produced.Add(($"file-{scripts.Count + produced.Count}-{step.VMName}", content));
            }
            var inventory = backend.GetInventory();
            foreach (var qube in plan.Steps.Select(st => st.Hop).Distinct(StringComparer.Ordinal))
                if (PortForwardPlanner.Export(inventory, qube) is { } export)
                    produced.Add(($"export-{scripts.Count + produced.Count}-{qube}", export.Script));
            foreach (var (name, text) in produced) CheckScript(name, text, comments, interfaces);
            ipv6Scripts += produced.Count(p => p.Text.Contains("add rule ip6 qubes", StringComparison.Ordinal));
            scripts.AddRange(produced);
        }, output.WriteLine);

        var fuzzTime = System.Diagnostics.Stopwatch.GetElapsedTime(startTicks);
        var checkedByBash = BashSyntaxCheck(scriptsDir, scripts, limit: 250);
        output.WriteLine($"  timing: planning and checks {fuzzTime.TotalSeconds:0.0} s, bash -n {System.Diagnostics.Stopwatch.GetElapsedTime(startTicks).TotalSeconds - fuzzTime.TotalSeconds:0.0} s");
        output.WriteLine($"  forwards: {created} created, {refusedInput} refused at input, {refusedPlan} refused when planned ({string.Join(", ", planRefusals.Select(kv => $"{kv.Key} {kv.Value}"))}), {applied} applied; " +
                         $"{scripts.Count} scripts and hook files checked ({checkedByBash} distinct ones by bash -n), {traced} comments and interface names traced");
        Assert.True(applied > 30, "too few forwards were applied to prove anything");
        Assert.True(ipv6Scripts > 0, "no script carried IPv6 rules");
    }

    /// <summary>
    /// Printable ASCII only; every user-supplied comment or interface name sits where the shell does not
    /// interpret it: on a comment line, inside single quotes, or inside the quoted nft here-document
    /// (where nft sees it between double quotes).
    /// </summary>
    internal static void CheckScript(string name, string text, IEnumerable<string> comments, IEnumerable<string> interfaces)
    {
        var bad = text.AsSpan().IndexOfAnyExcept(ScriptCharacters);
        Assert.True(bad < 0, bad < 0 ? "" : $"{name}: character {RuleGrammar.Describe(text[bad])} at {bad}");
        var traced = comments.Concat(interfaces).Where(v => text.Contains(v, StringComparison.Ordinal)).ToList();
        var lines = text.Split('\n');
        var inHeredoc = false;
        var heredocs = 0;
        foreach (var line in lines)
        {
            if (inHeredoc)
            {
                if (line == NftForwardScript.HeredocDelimiter) { inHeredoc = false; continue; }
                Assert.False(line.TrimStart().StartsWith('#') && line.Contains(NftForwardScript.HeredocDelimiter, StringComparison.Ordinal), $"{name}: delimiter in a comment");
                foreach (var value in traced)
                    foreach (var at in Occurrences(line, value))
                        Assert.True(line[..at].Count(c => c == '"') % 2 == 1, $"{name}: '{value}' outside nft's double quotes in: {line}");
                continue;
            }
            if (line.Contains("<<'" + NftForwardScript.HeredocDelimiter + "'", StringComparison.Ordinal)) { inHeredoc = true; heredocs++; continue; }
            Assert.NotEqual(NftForwardScript.HeredocDelimiter, line);
            if (line.TrimStart().StartsWith('#')) continue;
            foreach (var value in traced)
                foreach (var at in Occurrences(line, value))
                    Assert.True(line[..at].Count(c => c == '\'') % 2 == 1, $"{name}: '{value}' outside single quotes in shell code: {line}");
        }
        Assert.False(inHeredoc, $"{name}: an unterminated here-document");
    }

    private static readonly System.Buffers.SearchValues<char> ScriptCharacters =
        System.Buffers.SearchValues.Create("\n\t" + string.Concat(Enumerable.Range(' ', '~' - ' ' + 1).Select(c => (char)c)));

    private static IEnumerable<int> Occurrences(string line, string value)
    {
        for (var i = line.IndexOf(value, StringComparison.Ordinal); i >= 0; i = line.IndexOf(value, i + 1, StringComparison.Ordinal)) yield return i;
    }

    /// <summary>Runs <c>bash -n</c> on the distinct texts, at most <paramref name="limit"/> of them unless a longer fuzz run asks for more (one bash process looping over the files); returns how many.</summary>
    internal static int BashSyntaxCheck(string dir, IEnumerable<(string Name, string Text)> scripts, int limit = int.MaxValue)
    {
        Directory.CreateDirectory(dir);
        var distinct = scripts.GroupBy(s => s.Text, StringComparer.Ordinal).Select(g => g.First()).Take(Fuzz.Iterations(limit) >= limit ? Math.Max(limit, Fuzz.Iterations(limit)) : limit).ToList();
        var files = new List<string>();
        foreach (var (name, text) in distinct)
        {
            var file = Path.Combine(dir, files.Count.ToString("D5", CultureInfo.InvariantCulture) + "-" + name.Replace('/', '_') + ".sh");
            File.WriteAllText(file, text, new UTF8Encoding(false));
            files.Add(file);
        }
        if (files.Count == 0) return 0;
        var info = new ProcessStartInfo("bash", ["-c", "rc=0; for f in \"$@\"; do bash -n \"$f\" 2>&1 || { echo \"bash -n failed: $f\"; rc=1; }; done; exit $rc", "bash-n", .. files])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"bash -n: {stdout.Result}{stderr}");
        return files.Count;
    }

    // ------------------------------------------------------------------ qubes.ConnectTCP bindings

    private static readonly Gen<string> ValidQubeName =
        from first in Gen.Char["abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]
        from rest in Gen.String[Gen.Char["abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"], 0, 30]
        let name = first + rest
        where QubesFirewall.Engine.Validation.QubeName.IsValid(name) && name != "dom0"
        select name;

    [Fact]
    public void ConnectTcp_units_and_scripts_for_random_bindings_hold_only_validated_characters_and_pass_bash_n()
    {
        var texts = new List<(string, string)>();
        var gen = from client in ValidQubeName
                  from targets in Gen.Select(ValidQubeName, Gen.Int[1, 65535], Gen.Int[1, 65535], (to, port, local) => (to, port, local)).Array[0, 4]
                  select (client, targets);
        int bindings = 0, refused = 0;
        Fuzz.Check("qubes.ConnectTCP units and scripts: random bindings", gen, 600, t =>
        {
            var list = new List<TcpBinding>();
            foreach (var (to, port, local) in t.targets)
            {
                try
                {
                    var b = TcpBinding.Create(t.client, to, port, local, permanent: true);
                    if (list.All(x => x.LocalPort != b.LocalPort)) list.Add(b);
                }
                catch (QubesFirewallException)
                {
                    refused++; // the same qube twice
                }
            }
            bindings += list.Count;
            var script = ConnectTcpUnits.Render(t.client, list);
            CheckScript($"connect-tcp-{texts.Count}", script, [], []);
            foreach (var b in list)
                foreach (var unit in new[] { ConnectTcpUnits.SocketUnit(b), ConnectTcpUnits.ServiceUnit(b) })
                {
                    // a unit file: printable ASCII lines, each a comment, a [Section], Key=value or empty: no value can start a line of its own
                    foreach (var line in unit.Split('\n'))
                        Assert.True(line.Length == 0 || line.StartsWith('#') || (line.StartsWith('[') && line.EndsWith(']')) || (line.IndexOf('=') > 0 && line[..line.IndexOf('=')].All(char.IsAsciiLetter)),
                            $"unit line: {line}");
                    Assert.DoesNotContain(unit, c => c is not ('\n' or (>= ' ' and <= '~')));
                }
            if (texts.Count < 150) texts.Add(($"connect-tcp-{texts.Count}", script));
        }, output.WriteLine, t => $"{t.client}: {string.Join(", ", t.targets.Select(x => $"{x.to}:{x.port}/{x.local}"))}");
        var n = BashSyntaxCheck(Path.Combine(_dir, "connect-tcp"), texts);
        output.WriteLine($"  {bindings} bindings rendered ({refused} refused), bash -n on {n} distinct scripts");
    }

    // ------------------------------------------------------------------ managed blocks

    private static readonly Gen<string> UserLine = Gen.OneOf(
        Gen.Const("#!/bin/sh"), Gen.Const("# the user's own comment $(not run) `nor this`"), Gen.Const("echo hello"), Gen.Const(""), Gen.Const("exit 0"),
        Gen.Const("exit"), Gen.Const("if true; then"), Gen.Const(":"), Gen.Const("fi"), Gen.Const("nft list ruleset >/dev/null 2>&1 || true"),
        Gen.Const("   # indented comment"), Gen.Const("x=1; y=\"$x\""), Gen.Const("cat <<'EOF'"), Gen.Const("EOF"));

    private static readonly Gen<string?> UserFile =
        from exists in Gen.Int[0, 5]
        from lines in UserLine.Array[0, 12]
        from endsWithNewline in Gen.Bool
        select exists == 0 ? null : string.Join('\n', Balanced(lines)) + (endsWithNewline && lines.Length > 0 ? "\n" : "");

    // keep the user's file valid shell: close what it opens
    private static IEnumerable<string> Balanced(string[] lines)
    {
        var ifs = 0;
        var heredoc = false;
        foreach (var l in lines)
        {
            if (heredoc && l != "EOF") { yield return l; continue; }
            if (l == "fi" && ifs == 0) continue;
            if (l == "EOF" && !heredoc) continue;
            if (l.StartsWith("exit", StringComparison.Ordinal) && (ifs > 0 || heredoc)) continue;
            if (l == "if true; then") ifs++;
            if (l == "fi") { ifs--; yield return ":"; }
            if (l == "cat <<'EOF'") heredoc = true;
            else if (l == "EOF") heredoc = false;
            yield return l;
        }
        if (heredoc) yield return "EOF";
        for (; ifs > 0; ifs--) yield return ":\nfi";
    }

    private static readonly Gen<string> Body =
        from forwards in Gen.Int[0, 3]
        from comment in Comment
        select forwards == 0 ? "" : $"# {comment}\n(\n  nft list table ip qubes >/dev/null || exit 1\n)\n";

    [Fact]
    public void Managed_blocks_replace_only_their_own_lines_and_the_result_is_valid_shell()
    {
        var results = new List<(string, string)>();
        Fuzz.Check("managed block: upsert into random hook files", Gen.Select(UserFile, Body, Body, (file, b1, b2) => (file, b1, b2)), 2000, t =>
        {
            var (file, b1, b2) = t;
            var once = ManagedBlock.Upsert(file, b1);
            Assert.Equal(b1.Length == 0 || b1.EndsWith('\n') ? b1 : b1 + "\n", ManagedBlock.Extract(once));
            var without = ManagedBlock.Remove(once)!;
            Assert.True(file is null ? without == ManagedBlock.Shebang + "\n" : without == file || without == file + "\n",
                $"the user's lines changed: {Fuzz.Show(file)} -> {Fuzz.Show(without)}");
            // replacing the block again changes only the block; twice the same is a fixpoint
            var twice = ManagedBlock.Upsert(once, b2);
            Assert.Equal(ManagedBlock.Upsert(file, b2), twice);
            Assert.Equal(twice, ManagedBlock.Upsert(twice, b2));
            Assert.True(ManagedBlock.HasShebang(twice) || (file is not null && !ManagedBlock.HasShebang(file)));
            if (results.Count < 300) results.Add(($"block-{results.Count}", twice));
        }, output.WriteLine, t => $"{Fuzz.Show(t.file)} + {Fuzz.Show(t.b1)} + {Fuzz.Show(t.b2)}");
        var n = BashSyntaxCheck(Path.Combine(_dir, "blocks"), results);
        output.WriteLine($"  bash -n on {n} distinct results");
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.EnumerateFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in Directory.EnumerateDirectories(from)) CopyDirectory(d, Path.Combine(to, Path.GetFileName(d)));
    }
}
