namespace QubesFirewall.Engine.Model;

/// <summary>The features the module owns on a qube: declarations (<c>qubesfirewall.*</c>) and the agent keys derived from them (<c>vm-config.qubesfw.*</c>).</summary>
public static class OwnFeatures
{
    public const string DeclarationPrefix = "qubesfirewall.";
    public const string AgentPrefix = "vm-config.qubesfw.";

    public static bool IsOwn(string name) =>
        name.StartsWith(DeclarationPrefix, StringComparison.Ordinal) || name.StartsWith(AgentPrefix, StringComparison.Ordinal);
}
