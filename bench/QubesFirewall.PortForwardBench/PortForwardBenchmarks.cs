using System.Globalization;
using System.Text;
using BenchmarkDotNet.Attributes;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.PortForwardBench;

/// <summary>
/// Planning and generation with <see cref="Count"/> forwards already declared: all on work, all through
/// sys-net and sys-firewall, as on a default install. No file or process I/O: the planner reads files
/// through a delegate that says "missing".
/// </summary>
[MemoryDiagnoser]
public class PortForwardBenchmarks
{
    [Params(10, 50, 100, 200)]
    public int Count { get; set; }

    private QubesInventory _inventory = null!;
    private PortForward _next = null!;
    private QubeForwards _sysNet = null!;
    private DeploymentOptions _options = null!;

    [GlobalSetup]
    public void Setup()
    {
        _inventory = QubesXml.Parse(Inventory.QubesXml(Count));
        _next = PortForward.Create("personal", ForwardProtocol.Tcp, 9000, allowFrom: ["192.168.1.0/24"]);
        var forwards = PortForwardDeclaration.ReadAll(_inventory).Select(d => d.Forward!).ToList();
        _sysNet = ForwardLayout.Build(_inventory, forwards, new List<string>()).For(_inventory.Get("sys-net"));
        _options = new DeploymentOptions { Now = DateTimeOffset.FromUnixTimeSeconds(1800000000) };
    }

    /// <summary>Read and validate every declaration (the features' grammar).</summary>
    [Benchmark]
    public int ParseDeclarations() => PortForwardDeclaration.ReadAll(_inventory).Count;

    /// <summary>Generate sys-net's script carrying all forwards.</summary>
    [Benchmark]
    public int RenderHopScript() => NftForwardScript.Render(_sysNet).Length;

    /// <summary>A whole Add plan: chain, conflicts, the three qubes' scripts and managed blocks.</summary>
    [Benchmark]
    public int PlanAdd() => PortForwardPlanner.PlanAdd(_inventory, _next, _options, (_, _) => null).Steps.Count;

    /// <summary>A whole Remove plan for one of the forwards.</summary>
    [Benchmark]
    public int PlanRemove() => PortForwardPlanner.PlanRemove(_inventory, "work", ForwardProtocol.Tcp, 10000, _options, (_, _) => null).Steps.Count;
}

/// <summary>A qubes.xml with sys-net, sys-firewall, work and personal, and <c>count</c> forwards declared on work.</summary>
public static class Inventory
{
    public static string QubesXml(int count)
    {
        var features = new StringBuilder();
        for (var i = 0; i < count; i++)
        {
            var port = (10000 + i).ToString(CultureInfo.InvariantCulture);
            features.Append($"<feature name=\"qubesfirewall.forward.tcp.{port}\">target={port} type=external allow=192.168.{i % 250}.0/24,10.{i % 250}.0.0/16 comment=service {port}</feature>");
        }
        static string Domain(int qid, string name, string netvm, bool net, string features = "") =>
            $"<domain id=\"domain-{qid}\" class=\"AppVM\"><properties><property name=\"label\">red</property><property name=\"name\">{name}</property>" +
            $"<property name=\"qid\">{qid}</property>{(net ? "<property name=\"provides_network\">True</property>" : "")}<property name=\"netvm\">{netvm}</property></properties>" +
            $"<features>{features}</features><tags/></domain>";
        return "<qubes><labels><label id=\"label-1\" color=\"0xcc0000\">red</label></labels><properties><property name=\"default_netvm\">sys-firewall</property></properties><domains>" +
            "<domain id=\"domain-0\" class=\"AdminVM\"><properties><property name=\"label\">red</property></properties><features/><tags/></domain>" +
            Domain(2, "sys-net", "", true) + Domain(3, "sys-firewall", "sys-net", true) + Domain(11, "work", "sys-firewall", false, features.ToString()) +
            Domain(10, "personal", "sys-firewall", false) + "</domains></qubes>";
    }
}
