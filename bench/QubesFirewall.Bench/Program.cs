using System.Diagnostics;
using System.Globalization;
using System.Management.Automation;
using System.Management.Automation.Runspaces;
using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.TestQubesd;

// Benchmark (not run by CI): N qubes x R rules piped through ONE Add-QubeFirewallRule pipeline, live
// backend against the stand-in qubesd; Admin API calls per qube and wall time. Beside it, what the
// same job costs with qvm-firewall: one process and (from core-admin-client's qvm_firewall.py and
// qubesadmin: admin.vm.List to resolve the qube, admin.vm.firewall.Get, admin.vm.firewall.Set) three
// Admin API calls per rule; its call pattern is replayed against the same stand-in for a sample of
// qubes and scaled (the Python process start of each qvm-firewall cannot be measured here).
//
//   dotnet pwsh ./build.ps1 -Task Package
//   dotnet run -c Release --project bench/QubesFirewall.Bench -- [qubes=1000] [rules=20] [qvm-firewall sample qubes=25]
//       [--service-ms 1] [--latency-ms 0.2]
// qubesd's work is modelled in the stand-in (issue #21): --service-ms per call behind one lock (qubesd runs every
// handler in one asyncio loop, so calls never overlap there), --latency-ms per connection outside it (0 and 0: none).

var named = new Dictionary<string, double>(StringComparer.Ordinal) { ["--service-ms"] = 1, ["--latency-ms"] = 0.2 };
var positional = new List<string>();
for (var i = 0; i < args.Length; i++)
{
    if (named.ContainsKey(args[i]) && i + 1 < args.Length) named[args[i]] = double.Parse(args[++i], CultureInfo.InvariantCulture);
    else positional.Add(args[i]);
}
var qubeCount = positional.Count > 0 ? int.Parse(positional[0], CultureInfo.InvariantCulture) : 1000;
var rulesPerQube = positional.Count > 1 ? int.Parse(positional[1], CultureInfo.InvariantCulture) : 20;
var sampleQubes = positional.Count > 2 ? int.Parse(positional[2], CultureInfo.InvariantCulture) : 25;

var repo = FindRepo();
var manifest = Path.Combine(repo, "out", "QubesFirewall", "QubesFirewall.psd1");
if (!File.Exists(manifest)) { Console.Error.WriteLine($"Stage the module first: dotnet pwsh ./build.ps1 -Task Package ({manifest} is missing)."); return 1; }

var work = Path.Combine(Path.GetTempPath(), "qfw-bench-" + Guid.NewGuid().ToString("N")[..8]);
try
{
    var names = MakeRoot(Path.Combine(work, "root"), Path.Combine(repo, "examples", "qubes-root"), qubeCount);
    using var server = new FakeQubesd(Path.Combine(work, "root"), Path.Combine(work, "qubesd.sock"))
    {
        ServiceTime = TimeSpan.FromMilliseconds(named["--service-ms"]),
        ConnectionLatency = TimeSpan.FromMilliseconds(named["--latency-ms"]),
    };
    Console.WriteLine($"{qubeCount} qubes x {rulesPerQube} rules = {qubeCount * rulesPerQube:N0} rules, stand-in qubesd at {server.SocketPath}");
    Console.WriteLine($"modelled qubesd: {named["--service-ms"]} ms of work per call behind one lock, {named["--latency-ms"]} ms per connection");
    Console.WriteLine($"machine: {Environment.ProcessorCount} cores, .NET {Environment.Version}");

    // The input: one object per rule, bound by property name (what Import-Csv would give).
    var input = new List<PSObject>(qubeCount * rulesPerQube);
    foreach (var (name, q) in names.Select((n, i) => (n, i)))
        for (var r = 0; r < rulesPerQube; r++)
        {
            var o = new PSObject();
            o.Properties.Add(new PSNoteProperty("VMName", name));
            o.Properties.Add(new PSNoteProperty("Action", "Accept"));
            o.Properties.Add(new PSNoteProperty("Protocol", "Tcp"));
            o.Properties.Add(new PSNoteProperty("DstHost", $"10.{q / 250}.{q % 250}.{r + 1}"));
            o.Properties.Add(new PSNoteProperty("DstPorts", (8000 + r).ToString(CultureInfo.InvariantCulture)));
            o.Properties.Add(new PSNoteProperty("Comment", $"bench rule {r}"));
            input.Add(o);
        }

    var iss = InitialSessionState.CreateDefault2();
    iss.ImportPSModule(manifest);
    iss.EnvironmentVariables.Add(new SessionStateVariableEntry("QUBESFW_ROOT", "", ""));
    iss.EnvironmentVariables.Add(new SessionStateVariableEntry("QUBESFW_QUBESD_SOCKET", server.SocketPath, ""));
    using var runspace = RunspaceFactory.CreateRunspace(iss);
    runspace.Open();

    // Warm up (JIT, module load) on one qube, then clear the counters.
    Invoke(runspace, "Get-QubeFirewallRule -VMName sys-firewall | Out-Null", null);
    server.ClearCalls();

    var watch = Stopwatch.StartNew();
    var errors = Invoke(runspace, "$input | Add-QubeFirewallRule", input);
    watch.Stop();
    var calls = server.Calls;
    var perQube = calls.GroupBy(c => c.Destination).Select(g => g.Count()).ToList();
    Console.WriteLine();
    Console.WriteLine("QubesFirewall, one pipeline: $input | Add-QubeFirewallRule");
    Console.WriteLine($"  errors: {errors}");
    Console.WriteLine($"  Admin API calls: {calls.Count:N0} total; per qube min {perQube.Min()} / max {perQube.Max()} ({string.Join(", ", calls.Where(c => c.Destination == names[0]).Select(c => c.Method))})");
    Console.WriteLine($"  processes started: 0");
    Console.WriteLine($"  wall time: {watch.Elapsed.TotalSeconds:F2} s ({watch.Elapsed.TotalMilliseconds / qubeCount:F2} ms per qube, {watch.Elapsed.TotalMilliseconds * 1000 / (qubeCount * rulesPerQube):F0} us per rule)");
    var check = server.RuleLines(names[^1]);
    Console.WriteLine($"  check: {names[^1]} now has {check.Count} rules, {check.Count(l => l.Contains("bench rule", StringComparison.Ordinal))} from the bench");

    // Reading the inventory of all qubes once (Get-Qube): one List, one GetAll per qube.
    server.ClearCalls();
    watch.Restart();
    Invoke(runspace, "Get-Qube | Out-Null", null);
    watch.Stop();
    Console.WriteLine($"  Get-Qube of {qubeCount + 16} qubes: {server.Calls.Count:N0} calls, {watch.Elapsed.TotalSeconds:F2} s");

    // qvm-firewall's call pattern per rule: admin.vm.List (dom0), admin.vm.firewall.Get, admin.vm.firewall.Set (+1 process).
    server.ClearCalls();
    var client = new QubesdClient(server.SocketPath);
    var sample = names.Take(Math.Min(sampleQubes, names.Count)).ToList();
    watch.Restart();
    foreach (var (name, q) in sample.Select((n, i) => (n, i)))
        for (var r = 0; r < rulesPerQube; r++)
        {
            client.Call("admin.vm.List", "dom0");
            var current = client.CallText("admin.vm.firewall.Get", name);
            var rule = $"action=accept dst4=10.{200 + q / 250}.{q % 250}.{r + 1}/32 proto=tcp dstports={8000 + r}-{8000 + r} comment=bench rule {r}";
            client.Call("admin.vm.firewall.Set", name, payload: Encoding.ASCII.GetBytes(current + rule + "\n"));
        }
    watch.Stop();
    var sampleRules = sample.Count * rulesPerQube;
    var scale = (double)qubeCount * rulesPerQube / sampleRules;
    Console.WriteLine();
    Console.WriteLine("qvm-firewall VM add ... once per rule (counted from core-admin-client: 1 process, 3 Admin API calls each)");
    Console.WriteLine($"  processes: {qubeCount * rulesPerQube:N0}; Admin API calls: {3 * qubeCount * rulesPerQube:N0} (3 per rule, {3 * rulesPerQube} per qube)");
    Console.WriteLine($"  its Admin API calls replayed for {sample.Count} qubes ({sampleRules:N0} rules, {server.Calls.Count:N0} calls): {watch.Elapsed.TotalSeconds:F2} s; scaled to {qubeCount} qubes: {watch.Elapsed.TotalSeconds * scale:F1} s, before {qubeCount * rulesPerQube:N0} Python process starts");
    Console.WriteLine("  (each admin.vm.List reply lists every qube; and without --before each added accept lands after the final drop)");
    return 0;
}
finally
{
    try { Directory.Delete(work, recursive: true); } catch (IOException) { }
}

static int Invoke(Runspace runspace, string script, IList<PSObject>? input)
{
    using var ps = PowerShell.Create(runspace);
    ps.AddScript(script);
    if (input is not null) ps.Invoke(input); else ps.Invoke();
    foreach (var e in ps.Streams.Error.Take(3)) Console.Error.WriteLine(e);
    return ps.Streams.Error.Count;
}

static List<string> MakeRoot(string root, string sample, int count)
{
    Copy(sample, root);
    var xmlPath = Path.Combine(root, "qubes.xml");
    var xml = File.ReadAllText(xmlPath);
    var sb = new StringBuilder();
    var names = new List<string>();
    for (var i = 0; i < count; i++)
    {
        var name = $"bench-{i:D4}";
        var qid = 100 + i;
        names.Add(name);
        sb.Append(CultureInfo.InvariantCulture, $"""
                <domain id="domain-{qid}" class="AppVM">
                  <properties>
                    <property name="label">red</property>
                    <property name="name">{name}</property>
                    <property name="qid">{qid}</property>
                    <property name="template">fedora-42-xfce</property>
                  </properties>
                  <features/>
                  <tags/>
                </domain>

            """);
        // Each starts with a typical list: DNS, ICMP, then drop.
        var dir = Path.Combine(root, "appvms", name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "firewall.xml"), """
            <firewall version="2">
              <rules>
                <rule>
                  <properties>
                    <property name="action">accept</property>
                    <property name="specialtarget">dns</property>
                  </properties>
                </rule>
                <rule>
                  <properties>
                    <property name="action">accept</property>
                    <property name="proto">icmp</property>
                  </properties>
                </rule>
                <rule>
                  <properties>
                    <property name="action">drop</property>
                  </properties>
                </rule>
              </rules>
            </firewall>

            """);
    }
    File.WriteAllText(xmlPath, xml.Replace("  </domains>", sb + "  </domains>", StringComparison.Ordinal));
    return names;
}

static void Copy(string from, string to)
{
    Directory.CreateDirectory(to);
    foreach (var f in Directory.EnumerateFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    foreach (var d in Directory.EnumerateDirectories(from)) Copy(d, Path.Combine(to, Path.GetFileName(d)));
}

static string FindRepo()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "QubesFirewall.slnx"))) return dir.FullName;
    throw new InvalidOperationException("repository root not found");
}
